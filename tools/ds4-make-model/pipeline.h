// An ordered producer pipeline: workers compute items in parallel, the calling thread
// consumes them strictly in index order (e.g. appends them to a file), and at most
// `window` items are computed ahead of the consumer, so memory stays bounded by
// window × item size however long the sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace ds4::synth {

using Bytes = std::vector<uint8_t>;

// Calls produce(i) for every i in [0, n) on `threads` worker threads and consume(i, bytes)
// on the calling thread in increasing i. The first exception thrown by either side stops
// the pipeline and is rethrown after every worker has been joined.
void run_ordered(size_t n, unsigned threads, size_t window,
                 const std::function<Bytes(size_t)>& produce,
                 const std::function<void(size_t, Bytes&&)>& consume);

}  // namespace ds4::synth
