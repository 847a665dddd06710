// Device basics: buffers round-trip, errors become ds4::Error naming the call, and an
// impossible allocation is refused with a message instead of a crash.
#include <gtest/gtest.h>

#include <string>

#include "cuda/device.h"
#include "cuda/forward.h"
#include "cuda_test_util.h"

namespace ds4::cuda {
namespace {

TEST(CudaDevice, ReportsTheCard) {
    DS4_REQUIRE_GPU();
    const DeviceInfo info = device_info(0);
    EXPECT_FALSE(info.name.empty());
    EXPECT_GT(info.sm_count, 0);
    EXPECT_GT(info.total_bytes, info.free_bytes / 2);
    std::printf("GPU 0: %s, %d SMs, cc %d.%d, %.1f GiB (%.1f free), L2 %zu MB\n", info.name.c_str(),
                info.sm_count, info.cc_major, info.cc_minor, static_cast<double>(info.total_bytes) / (1 << 30),
                static_cast<double>(info.free_bytes) / (1 << 30), info.l2_bytes >> 20);
}

TEST(CudaDevice, BufferRoundTrip) {
    DS4_REQUIRE_GPU();
    const std::vector<float> host = test::random_floats(1000, 1);
    DeviceBuffer<float> d = to_device<float>(host);
    EXPECT_EQ(d.size(), 1000u);
    EXPECT_EQ(d.download(), host);
    DeviceBuffer<float> moved = std::move(d);
    EXPECT_EQ(d.data(), nullptr);
    EXPECT_EQ(moved.download(), host);
}

// Logits' host memory in a CUDA engine: page-locked up to kPinnedLogitsMaxBytes (the
// device copies into it; the runtime reports it as host memory), the heap beyond; both
// 64-byte aligned and freed by the one function; a device copy lands in the pinned one.
TEST(CudaDevice, PinnedLogitsUpToTheLimitHeapBeyond) {
    DS4_REQUIRE_GPU();
    const auto kind = [](const void* p) {
        cudaPointerAttributes at{};
        EXPECT_EQ(cudaPointerGetAttributes(&at, p), cudaSuccess);
        return at.type;
    };
    auto* pinned = static_cast<float*>(pinned_logits_alloc(1000 * sizeof(float)));
    void* heap = pinned_logits_alloc(kPinnedLogitsMaxBytes + 4);
    ASSERT_NE(pinned, nullptr);
    ASSERT_NE(heap, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(pinned) % 64, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(heap) % 64, 0u);
    EXPECT_EQ(kind(pinned), cudaMemoryTypeHost);
    EXPECT_EQ(kind(heap), cudaMemoryTypeUnregistered);
    const std::vector<float> host = test::random_floats(1000, 7);
    const DeviceBuffer<float> d = to_device<float>(host);
    ASSERT_EQ(cudaMemcpyAsync(pinned, d.data(), 1000 * sizeof(float), cudaMemcpyDeviceToHost, nullptr), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
    EXPECT_EQ(std::vector<float>(pinned, pinned + 1000), host);
    pinned_logits_free(pinned);
    pinned_logits_free(heap);
    pinned_logits_free(nullptr);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(CudaDevice, ErrorsNameTheCall) {
    DS4_REQUIRE_GPU();
    try {
        DS4_CUDA_CHECK(cudaMemcpy(nullptr, reinterpret_cast<void*>(16), 64, cudaMemcpyDeviceToDevice));
        FAIL() << "expected ds4::Error";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("cudaMemcpy"), std::string::npos) << msg;
        EXPECT_NE(msg.find("CUDA error"), std::string::npos) << msg;
    }
    cudaGetLastError();
}

TEST(CudaDevice, TooLargeIsAClearError) {
    DS4_REQUIRE_GPU();
    const size_t huge = size_t{1} << 50;  // 1 PiB
    try {
        ensure_fits(huge, "test weights");
        FAIL() << "expected ds4::Error";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("test weights needs"), std::string::npos) << msg;
        EXPECT_NE(msg.find("GiB are free"), std::string::npos) << msg;
    }
    EXPECT_THROW(DeviceBuffer<uint8_t> b(huge), Error);
    cudaGetLastError();
}

}  // namespace
}  // namespace ds4::cuda
