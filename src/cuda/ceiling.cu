#include "cuda/ceiling.h"

#include <algorithm>
#include <vector>

#include "cuda/device.h"

namespace ds4::cuda {

CopyCeiling measure_copy_ceiling(uint64_t bytes, int reps) {
    if (bytes == 0 || reps <= 0) fail("measure_copy_ceiling: bytes and reps must be positive");
    if (device_count() == 0) fail("measure_copy_ceiling: no CUDA device is visible");
    ensure_fits(2 * bytes, "the device-to-device copy ceiling (two buffers)");
    CopyCeiling c;
    c.bytes = bytes;
    c.reps = reps;
    c.device = device_info(0).name;
    DeviceBuffer<uint8_t> src(bytes), dst(bytes);
    // Touch both buffers first: the first pass over fresh allocations pays page mapping.
    src.fill_bytes(1);
    dst.fill_bytes(0);
    Stream stream;
    const auto copy = [&] {
        DS4_CUDA_CHECK(
            cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream.get()));
    };
    copy();
    stream.sync();
    std::vector<float> ms;
    for (int i = 0; i < reps; ++i) {
        Event a, b;
        a.record(stream.get());
        copy();
        b.record(stream.get());
        b.sync();
        ms.push_back(b.ms_since(a));
    }
    std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
    c.copy_gbs = 2.0 * double(bytes) / (double(ms[size_t(reps / 2)]) * 1e6);
    return c;
}

}  // namespace ds4::cuda
