// CUPTI activity records of kernels (kernel_trace.h).
#include "kernel_trace.h"

#include "ds4/error.h"

// CUPTI's header ships with the CUDA toolkit (some distributions package it apart): without
// it the tracer is a clear error at run time, not a build failure.
#if __has_include(<cupti.h>)
#include <cupti.h>
#include <cxxabi.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

namespace ds4::cuda {
namespace {

struct Kernel {
    uint64_t start = 0, end = 0;
    uint32_t stream = 0;
    std::string name;
};

// CUPTI calls back without a user pointer: the records go to one process-wide list.
std::mutex g_mu;
std::vector<Kernel> g_kernels;

using GetNextRecord = CUptiResult (*)(uint8_t*, size_t, CUpti_Activity**);
GetNextRecord g_next = nullptr;

constexpr size_t kBufferBytes = size_t{8} << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
    *size = kBufferBytes;
    *max_records = 0;
}

// "void ds4::cuda::(anonymous namespace)::q8r_kernel<4, 1, 1, 1>(...)" -> "q8r_kernel<4, 1, 1, 1>"
std::string short_name(const char* mangled) {
    int status = 0;
    char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    std::string n = status == 0 && d != nullptr ? d : mangled;
    std::free(d);
    int depth = 0;
    for (size_t i = 0; i < n.size(); ++i) {  // the parameter list: the first '(' outside <>
        if (n[i] == '<') ++depth;
        if (n[i] == '>') --depth;
        if (n[i] == '(' && depth == 0 && n.compare(i, 21, "(anonymous namespace)") != 0) {
            n.resize(i);
            break;
        }
    }
    for (const char* strip : {"void ", "ds4::cuda::", "(anonymous namespace)::", "dev::"}) {
        for (size_t at = n.find(strip); at != std::string::npos; at = n.find(strip))
            n.erase(at, std::strlen(strip));
    }
    return n;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
    CUpti_Activity* rec = nullptr;
    std::vector<Kernel> got;
    while (g_next != nullptr && g_next(buffer, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL &&
            rec->kind != CUPTI_ACTIVITY_KIND_KERNEL)
            continue;
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
        got.push_back(Kernel{k->start, k->end, k->streamId, short_name(k->name)});
    }
    std::free(buffer);
    const std::lock_guard<std::mutex> lock(g_mu);
    g_kernels.insert(g_kernels.end(), got.begin(), got.end());
}

}  // namespace

struct KernelTrace::Impl {
    void* lib = nullptr;
    CUptiResult (*enable)(CUpti_ActivityKind) = nullptr;
    CUptiResult (*disable)(CUpti_ActivityKind) = nullptr;
    CUptiResult (*register_callbacks)(CUpti_BuffersCallbackRequestFunc,
                                      CUpti_BuffersCallbackCompleteFunc) = nullptr;
    CUptiResult (*flush_all)(uint32_t) = nullptr;
    std::vector<Kernel> kernels;  // of the last start / stop

    template <class F>
    void sym(F& f, const char* name) {
        f = reinterpret_cast<F>(dlsym(lib, name));
        if (f == nullptr) fail("kernel trace: ", name, " not in libcupti");
    }
};

KernelTrace::KernelTrace() : impl_(std::make_unique<Impl>()) {
    std::vector<std::string> names;
    if (const char* env = std::getenv("DS4_CUPTI"); env != nullptr && *env != 0)
        names.emplace_back(env);
    names.emplace_back("libcupti.so.13");
    names.emplace_back("libcupti.so");
    for (const std::string& n : names)
        if ((impl_->lib = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
    if (impl_->lib == nullptr)
        fail("kernel trace: libcupti not found (set DS4_CUPTI=/path/to/libcupti.so.13)");
    impl_->sym(impl_->enable, "cuptiActivityEnable");
    impl_->sym(impl_->disable, "cuptiActivityDisable");
    impl_->sym(impl_->register_callbacks, "cuptiActivityRegisterCallbacks");
    impl_->sym(impl_->flush_all, "cuptiActivityFlushAll");
    impl_->sym(g_next, "cuptiActivityGetNextRecord");
    if (impl_->register_callbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS)
        fail("kernel trace: cuptiActivityRegisterCallbacks failed");
}

KernelTrace::~KernelTrace() = default;  // libcupti stays loaded: its threads may outlive us

void KernelTrace::start() {
    {
        const std::lock_guard<std::mutex> lock(g_mu);
        g_kernels.clear();
    }
    if (impl_->enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS)
        fail("kernel trace: cuptiActivityEnable(CONCURRENT_KERNEL) failed");
}

void KernelTrace::stop() {
    impl_->disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    impl_->flush_all(1);  // CUPTI_ACTIVITY_FLAG_FLUSH_FORCED
    const std::lock_guard<std::mutex> lock(g_mu);
    impl_->kernels = g_kernels;
}

// A kernel's share of the step is how far it moves the GPU's last end (all streams: a
// graph's kernels report their own stream ids, and the side stream's work counts only where
// the main one waits for it). Overlap with the kernel before (PDL) is free; an idle gap
// before it (the host preparing the next step, launch latency) is counted apart.
void KernelTrace::print(std::FILE* out, unsigned steps) const {
    std::vector<Kernel> ks = impl_->kernels;
    if (ks.empty()) {
        std::fprintf(out, "kernel trace: no kernels recorded\n");
        return;
    }
    std::sort(ks.begin(), ks.end(), [](const Kernel& a, const Kernel& b) { return a.start < b.start; });
    struct Sum {
        unsigned n = 0;
        double extends = 0, busy = 0;
    };
    std::map<std::string, Sum> by_name;
    const uint64_t t0 = ks.front().start;
    uint64_t end = t0;
    double total_busy = 0, idle = 0, largest_gap = 0;
    std::fprintf(out, "# kernel trace: stream start_us end_us extends_us dur_us name (start order)\n");
    for (const Kernel& k : ks) {
        if (k.start > end) {
            const double gap = (k.start - end) / 1e3;
            idle += gap;
            largest_gap = std::max(largest_gap, gap);
        }
        const double ext = k.end > end ? (k.end - std::max(end, k.start)) / 1e3 : 0;
        end = std::max(end, k.end);
        const double dur = (k.end - k.start) / 1e3;
        Sum& s = by_name[k.name];
        ++s.n;
        s.extends += ext;
        s.busy += dur;
        total_busy += dur;
        std::fprintf(out, "trace %3u %9.2f %9.2f %7.2f %7.2f %s\n", k.stream, (k.start - t0) / 1e3,
                     (k.end - t0) / 1e3, ext, dur, k.name.c_str());
    }
    const double wall = (end - t0) / 1e3, per = steps > 0 ? steps : 1;
    std::vector<std::pair<std::string, Sum>> rows(by_name.begin(), by_name.end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.extends > b.second.extends; });
    std::fprintf(out,
                 "# per step (%u traced): wall %.1f us = kernels extending %.1f + GPU idle %.1f (largest gap "
                 "%.1f); kernel time %.1f us, %zu kernels\n",
                 steps, wall / per, (wall - idle) / per, idle / per, largest_gap, total_busy / per,
                 ks.size() / static_cast<size_t>(per));
    std::fprintf(out, "# launches extends_us dur_us name (per step)\n");
    for (const auto& [name, s] : rows)
        std::fprintf(out, "sum %5.1f %9.1f %9.1f %s\n", s.n / per, s.extends / per, s.busy / per,
                     name.c_str());
}

}  // namespace ds4::cuda
#else
namespace ds4::cuda {
struct KernelTrace::Impl {};
KernelTrace::KernelTrace() { fail("kernel trace: built without CUPTI's header (cupti.h)"); }
KernelTrace::~KernelTrace() = default;
void KernelTrace::start() {}
void KernelTrace::stop() {}
void KernelTrace::print(std::FILE*, unsigned) const {}
}  // namespace ds4::cuda
#endif
