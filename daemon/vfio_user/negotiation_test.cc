#include "daemon/vfio_user/negotiation.h"

#include <cstring>
#include <string>
#include <vector>

#include "daemon/vfio_user/protocol.h"
#include "gtest/gtest.h"

namespace vfiod::vfio_user {
namespace {

// What QEMU 11.1 proposes (../shared/notes/vfio-user-qemu.md).
constexpr char kQemuProposal[] =
    R"({"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, )"
    R"("max_data_xfer_size": 1048576, "migration": {"max_bitmap_size": 268435456, )"
    R"("pgsize": 4096}, "write_multiple": true}})";

std::vector<uint8_t> Payload(uint16_t major, uint16_t minor, const std::string& json,
                             bool terminate = true) {
  std::vector<uint8_t> payload(4);
  std::memcpy(payload.data(), &major, 2);
  std::memcpy(payload.data() + 2, &minor, 2);
  payload.insert(payload.end(), json.begin(), json.end());
  if (terminate && !json.empty()) payload.push_back(0);
  return payload;
}

ServerLimits Limits() {
  ServerLimits limits;
  limits.max_msg_fds = 16;
  limits.max_data_xfer_size = 65536;
  limits.max_dma_maps = 4096;
  limits.page_sizes = 0xfffffffffffff000;  // type1 on intel-iommu
  return limits;
}

TEST(NegotiationTest, QemuProposalIsNarrowedToWhatThisServerTakes) {
  absl::StatusOr<Negotiated> n = Negotiate(Payload(0, 0, kQemuProposal), Limits());
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->major, 0);
  EXPECT_EQ(n->minor, 0);
  EXPECT_EQ(n->client_max_msg_fds, 16u);
  EXPECT_EQ(n->max_msg_fds, 16u);
  EXPECT_EQ(n->max_data_xfer_size, 65536u);
  EXPECT_EQ(n->max_dma_maps, 4096u);
  EXPECT_EQ(n->page_sizes, 4096u);
}

TEST(NegotiationTest, AbsentCapabilitiesTakeTheSpecDefaults) {
  ServerLimits limits = Limits();
  limits.max_data_xfer_size = 1 << 22;
  limits.max_dma_maps = 100000;
  for (const std::string& json : {std::string(), std::string("{}"),
                                  std::string(R"({"capabilities": {}})")}) {
    absl::StatusOr<Negotiated> n = Negotiate(Payload(0, 3, json), limits);
    ASSERT_TRUE(n.ok()) << json << ": " << n.status();
    EXPECT_EQ(n->minor, 0) << "the reply's minor is never above ours";
    EXPECT_EQ(n->client_max_msg_fds, 1u);
    EXPECT_EQ(n->max_data_xfer_size, kDefaultMaxDataXferSize);
    EXPECT_EQ(n->max_dma_maps, kDefaultMaxDmaMaps);
    EXPECT_EQ(n->page_sizes, kDefaultPageSizes);
  }
}

TEST(NegotiationTest, ReplyIsTheSpecJsonWithNumbers) {
  absl::StatusOr<Negotiated> n = Negotiate(Payload(0, 0, kQemuProposal), Limits());
  ASSERT_TRUE(n.ok());
  std::vector<uint8_t> reply = VersionReply(*n);
  ASSERT_GT(reply.size(), 5u);
  uint16_t major, minor;
  std::memcpy(&major, reply.data(), 2);
  std::memcpy(&minor, reply.data() + 2, 2);
  EXPECT_EQ(major, 0);
  EXPECT_EQ(minor, 0);
  EXPECT_EQ(reply.back(), 0);
  std::string json(reply.begin() + 4, reply.end() - 1);
  EXPECT_NE(json.find(R"("max_msg_fds":16)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("max_data_xfer_size":65536)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("max_dma_maps":4096)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("pgsizes":4096)"), std::string::npos) << json;
  EXPECT_EQ(json.find("migration"), std::string::npos) << json;
  EXPECT_EQ(json.find("write_multiple"), std::string::npos) << json;
  // The reply parses back as a proposal with the same values.
  absl::StatusOr<Negotiated> again = Negotiate(reply, Limits());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->page_sizes, 4096u);
  EXPECT_EQ(again->client_max_msg_fds, 16u);
}

TEST(NegotiationTest, MalformedProposalsAreRefused) {
  const struct {
    const char* what;
    std::vector<uint8_t> payload;
  } cases[] = {
      {"short payload", {0, 0, 0}},
      {"major 1", Payload(1, 0, "")},
      {"not NUL-terminated", Payload(0, 0, "{}", /*terminate=*/false)},
      {"NUL inside", Payload(0, 0, std::string("{}\0{}", 5))},
      {"not JSON", Payload(0, 0, "capabilities")},
      {"wrong type", Payload(0, 0, R"({"capabilities": {"max_msg_fds": "many"}})")},
      {"negative", Payload(0, 0, R"({"capabilities": {"max_dma_maps": -1}})")},
      {"capabilities not an object", Payload(0, 0, R"({"capabilities": 7})")},
      {"invalid UTF-8", Payload(0, 0, "{\"x\": \"\xff\xfe\"}")},
      {"no page size in common", Payload(0, 0, R"({"capabilities": {"pgsizes": 2048}})")},
      {"zero transfer size", Payload(0, 0, R"({"capabilities": {"max_data_xfer_size": 0}})")},
      {"zero DMA maps", Payload(0, 0, R"({"capabilities": {"max_dma_maps": 0}})")},
      {"too long", Payload(0, 0, std::string(5000, ' ') + "{}")},
  };
  for (const auto& c : cases) {
    absl::StatusOr<Negotiated> n = Negotiate(c.payload, Limits());
    EXPECT_EQ(n.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_NE(n.status().message().find("VERSION"), absl::string_view::npos) << c.what;
  }
}

TEST(NegotiationTest, UnknownCapabilitiesAreIgnored) {
  absl::StatusOr<Negotiated> n = Negotiate(
      Payload(0, 0, R"({"capabilities": {"future": [1, 2], "pgsizes": 4096}, "x": null})"),
      Limits());
  EXPECT_TRUE(n.ok()) << n.status();
}

}  // namespace
}  // namespace vfiod::vfio_user
