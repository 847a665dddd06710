// GGUF → VRAM upload: every tensor arrives byte-exact and 16-byte aligned, with its type
// and shape, and a matmul on an uploaded tensor matches the reference; unknown names
// are errors that name the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <unistd.h>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "cuda/weights.h"
#include "cuda_test_util.h"
#include "gguf/gguf.h"
#include "quant/reference.h"

namespace ds4::cuda {
namespace {

TEST(CudaWeights, UploadsEveryTensorByteExact) {
    DS4_REQUIRE_GPU();
    const std::string path =
        (std::filesystem::temp_directory_path() / cat("ds4_cuda_weights_", ::getpid(), ".gguf")).string();
    const uint64_t cols = 512, rows = 6;
    const std::vector<float> norm = test::random_floats(64, 21);
    const std::vector<float> w = test::random_floats(rows * cols, 22);
    std::vector<quant::BlockQ8_0> q8(rows * cols / 32);
    quant::ref::quantize_q8_0(w.data(), q8.data(), static_cast<int64_t>(w.size()));
    {
        gguf::Writer wr;
        wr.add_string("general.architecture", "test");
        const uint64_t d_norm[] = {64};
        const uint64_t d_mat[] = {cols, rows};
        wr.add_tensor("norm.weight", d_norm, GgmlType::F32);
        wr.add_tensor("proj.weight", d_mat, GgmlType::Q8_0);
        wr.begin(path);
        wr.write_data({reinterpret_cast<const uint8_t*>(norm.data()), norm.size() * sizeof(float)});
        wr.write_data({reinterpret_cast<const uint8_t*>(q8.data()), q8.size() * sizeof(quant::BlockQ8_0)});
        wr.finish();
    }
    const gguf::File file = gguf::File::open(path);
    const DeviceWeights dw = DeviceWeights::upload(file, false);
    std::filesystem::remove(path);
    EXPECT_EQ(dw.size(), 2u);

    const DeviceTensor& n = dw.at("norm.weight");
    EXPECT_EQ(n.type, GgmlType::F32);
    EXPECT_EQ(n.dims[0], 64u);
    std::vector<float> back(64);
    DS4_CUDA_CHECK(cudaMemcpy(back.data(), n.data, 64 * sizeof(float), cudaMemcpyDeviceToHost));
    EXPECT_EQ(back, norm);

    const DeviceTensor& p = dw.at("proj.weight");
    EXPECT_EQ(p.type, GgmlType::Q8_0);
    EXPECT_EQ(p.dims[1], rows);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p.data) % 16, 0u);
    const std::vector<float> x = test::random_floats(cols, 23);
    DeviceBuffer<float> dx = to_device<float>(x), dy(rows);
    matmul(p.type, p.data, rows, cols, dx.data(), cols, dy.data(), rows, 1, nullptr);
    const std::vector<float> y = dy.download();
    std::vector<float> deq(w.size());
    quant::ref::dequant_q8_0(q8.data(), deq.data(), static_cast<int64_t>(deq.size()));
    for (uint64_t r = 0; r < rows; ++r) {
        double ref = 0, mag = 0;
        for (uint64_t c = 0; c < cols; ++c) {
            ref += static_cast<double>(deq[r * cols + c]) * x[c];
            mag += std::fabs(static_cast<double>(deq[r * cols + c]) * x[c]);
        }
        EXPECT_NEAR(y[r], ref, 1e-5 * mag) << "row " << r;
    }

    EXPECT_EQ(dw.find("missing.weight"), nullptr);
    try {
        (void)dw.at("missing.weight");
        FAIL() << "expected ds4::Error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("missing.weight"), std::string::npos) << e.what();
    }
}

// Tensors larger than the upload piece (here 1 MiB, so a 5 MiB + 36-byte tensor takes six
// pieces through the three staging buffers, each filled by four threads) and tensors of
// a few bytes between them arrive byte-exact.
TEST(CudaWeights, PiecewiseUploadIsByteExact) {
    DS4_REQUIRE_GPU();
    const std::string path =
        (std::filesystem::temp_directory_path() / cat("ds4_cuda_pieces_", ::getpid(), ".gguf")).string();
    const std::vector<uint64_t> counts = {1310729, 3, 700000, 1, 524288};
    std::vector<std::vector<float>> data;
    {
        gguf::Writer wr;
        wr.add_string("general.architecture", "test");
        for (size_t i = 0; i < counts.size(); ++i) {
            const uint64_t dims[] = {counts[i]};
            wr.add_tensor(cat("t", i, ".weight"), dims, GgmlType::F32);
            data.push_back(test::random_floats(counts[i], 40 + static_cast<uint32_t>(i)));
        }
        wr.begin(path);
        for (const auto& v : data) wr.write_data({reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)});
        wr.finish();
    }
    const gguf::File file = gguf::File::open(path);
    const DeviceWeights dw = DeviceWeights::upload(file, false, uint64_t{1} << 20);
    std::filesystem::remove(path);
    ASSERT_EQ(dw.size(), counts.size());
    for (size_t i = 0; i < counts.size(); ++i) {
        const DeviceTensor& t = dw.at(cat("t", i, ".weight"));
        std::vector<float> back(counts[i]);
        DS4_CUDA_CHECK(cudaMemcpy(back.data(), t.data, counts[i] * sizeof(float), cudaMemcpyDeviceToHost));
        EXPECT_EQ(std::memcmp(back.data(), data[i].data(), counts[i] * sizeof(float)), 0) << "tensor " << i;
    }
}

}  // namespace
}  // namespace ds4::cuda
