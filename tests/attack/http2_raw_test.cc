#include "tests/attack/http2_raw.h"

#include <string>

#include "gtest/gtest.h"

namespace vfiod::attack {
namespace {

std::string Bytes(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out.push_back(static_cast<char>(v));
  return out;
}

// RFC 7541, C.1.1-C.1.3.
TEST(Http2RawTest, HpackIntegersMatchTheRfcExamples) {
  EXPECT_EQ(HpackInteger(10, 5, 0), Bytes({0x0a}));
  EXPECT_EQ(HpackInteger(1337, 5, 0), Bytes({0x1f, 0x9a, 0x0a}));
  EXPECT_EQ(HpackInteger(42, 8, 0), Bytes({0x2a}));
  // The prefix's own maximum needs a continuation byte of 0.
  EXPECT_EQ(HpackInteger(127, 7, 0), Bytes({0x7f, 0x00}));
  EXPECT_EQ(HpackInteger(3, 4, 0x10), Bytes({0x13}));
}

TEST(Http2RawTest, LiteralWithoutIndexingNewNameIsRawOctets) {
  EXPECT_EQ(HpackLiteral("te", "trailers"), std::string("\x00\x02te\x08trailers", 13));
  // A value of 200 bytes: 0x7f then 200 - 127 = 73.
  const std::string long_value(200, 'v');
  EXPECT_EQ(HpackLiteral("k", long_value), std::string("\x00\x01k\x7f\x49", 5) + long_value);
}

TEST(Http2RawTest, FrameHeaderAndLengthPrefix) {
  EXPECT_EQ(Http2Frame(kHttp2Data, kHttp2FlagEndStream, 3, "abc"),
            Bytes({0, 0, 3, 0x0, 0x1, 0, 0, 0, 3}) + "abc");
  // The reserved bit of the stream id is never set.
  EXPECT_EQ(Http2Frame(kHttp2Settings, 0, 0xffffffffu, "").substr(5),
            Bytes({0x7f, 0xff, 0xff, 0xff}));
  EXPECT_EQ(GrpcLengthPrefixed("xy"), Bytes({0, 0, 0, 0, 2}) + "xy");
  const std::string block = GrpcRequestHeaderBlock("/vfiod.v1.VfioDevice/GetDeviceInfo");
  EXPECT_EQ(block.substr(0, 13), std::string("\x00\x07:method\x04POST", 13));
  EXPECT_NE(block.find("\x05:path\x22/vfiod.v1.VfioDevice/GetDeviceInfo"), std::string::npos);
}

TEST(Http2RawTest, ParsesCompleteFramesOnly) {
  const std::string bytes = Http2Frame(kHttp2Settings, 0, 0, std::string(6, '\0')) +
                            Http2Frame(kHttp2Headers, kHttp2FlagEndHeaders, 5, "hdr") +
                            Http2Frame(kHttp2Data, 0, 5, "partial").substr(0, 12);
  std::vector<Http2FrameHeader> frames = ParseHttp2Frames(bytes);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].type, kHttp2Settings);
  EXPECT_EQ(frames[0].length, 6u);
  EXPECT_EQ(frames[1].type, kHttp2Headers);
  EXPECT_EQ(frames[1].flags, kHttp2FlagEndHeaders);
  EXPECT_EQ(frames[1].stream_id, 5u);
}

}  // namespace
}  // namespace vfiod::attack
