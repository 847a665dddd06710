// IQ2_XXS format constants: published digests, definitions of the derived tables.
#include <openssl/evp.h>

#include <bit>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "quant/iq2_tables.h"

namespace ds4::quant {
namespace {

// SHA-1 of raw bytes (the host is little-endian, so the arrays are their LE packing).
std::string sha1_hex(const void* data, size_t size) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EXPECT_EQ(EVP_Digest(data, size, md, &len, EVP_sha1(), nullptr), 1);
    std::string hex;
    char buf[3];
    for (unsigned int i = 0; i < len; ++i) {
        std::snprintf(buf, sizeof(buf), "%02x", md[i]);
        hex += buf;
    }
    return hex;
}

static_assert(std::endian::native == std::endian::little);

TEST(RefIq2Tables, GridCodesMatchPublishedSha1) {
    EXPECT_EQ(sha1_hex(kIq2GridCodes, sizeof(kIq2GridCodes)),
              "9ddc56270d77061ebc51b9e70f80ef3a63a24b43");
    EXPECT_EQ(kIq2GridCodes[0], 0);
    EXPECT_EQ(kIq2GridCodes[1], 2);
    EXPECT_EQ(kIq2GridCodes[2], 5);
    EXPECT_EQ(kIq2GridCodes[3], 8);
    EXPECT_EQ(kIq2GridCodes[254], 43088);
    EXPECT_EQ(kIq2GridCodes[255], 43268);
}

TEST(RefIq2Tables, GridMatchesPublishedSha1) {
    EXPECT_EQ(sha1_hex(kIq2Grid, sizeof(kIq2Grid)), "ec46ea3456b6e871cc20c02bf21f28e177206310");
    EXPECT_EQ(kIq2Grid[0], 0x0808080808080808ull);
    EXPECT_EQ(kIq2Grid[255], 0x2b2b2b1908081908ull);
}

TEST(RefIq2Tables, GridIsDerivedFromCodes) {
    constexpr uint8_t kLevel[3] = {0x08, 0x19, 0x2b};
    for (int k = 0; k < 256; ++k) {
        for (int i = 0; i < 8; ++i) {
            const int field = (kIq2GridCodes[k] >> (2 * i)) & 3;
            ASSERT_LE(field, 2) << "entry " << k << " field " << i;
            EXPECT_EQ((kIq2Grid[k] >> (8 * i)) & 0xff, kLevel[field])
                << "entry " << k << " byte " << i;
        }
    }
}

TEST(RefIq2Tables, GridCodesAreDistinctAndSorted) {
    for (int k = 1; k < 256; ++k) EXPECT_LT(kIq2GridCodes[k - 1], kIq2GridCodes[k]) << k;
}

TEST(RefIq2Tables, SignsCarryEvenParityBit) {
    for (int s = 0; s < 128; ++s) {
        EXPECT_EQ(kIq2Signs[s] & 127, s);
        // the full 8-bit pattern always has an even number of negative signs
        EXPECT_EQ(std::popcount(static_cast<unsigned>(kIq2Signs[s])) % 2, 0) << s;
        EXPECT_EQ(kIq2Signs[s] >> 7, std::popcount(static_cast<unsigned>(s)) & 1) << s;
    }
}

TEST(RefIq2Tables, MaskIsOneBitPerElement) {
    for (int j = 0; j < 8; ++j) EXPECT_EQ(kIq2Mask[j], 1 << j);
}

}  // namespace
}  // namespace ds4::quant
