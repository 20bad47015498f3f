#include "client/status_convert.h"

#include "gtest/gtest.h"

namespace vfiod::client {
namespace {

TEST(StatusConvertTest, OkStaysOk) { EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok()); }

TEST(StatusConvertTest, KeepsCodeAndMessage) {
  const struct {
    grpc::StatusCode grpc;
    absl::StatusCode absl;
  } kCases[] = {
      {grpc::StatusCode::INVALID_ARGUMENT, absl::StatusCode::kInvalidArgument},
      {grpc::StatusCode::OUT_OF_RANGE, absl::StatusCode::kOutOfRange},
      {grpc::StatusCode::NOT_FOUND, absl::StatusCode::kNotFound},
      {grpc::StatusCode::ALREADY_EXISTS, absl::StatusCode::kAlreadyExists},
      {grpc::StatusCode::PERMISSION_DENIED, absl::StatusCode::kPermissionDenied},
      {grpc::StatusCode::FAILED_PRECONDITION, absl::StatusCode::kFailedPrecondition},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, absl::StatusCode::kResourceExhausted},
      {grpc::StatusCode::UNAVAILABLE, absl::StatusCode::kUnavailable},
      {grpc::StatusCode::INTERNAL, absl::StatusCode::kInternal},
      {grpc::StatusCode::DEADLINE_EXCEEDED, absl::StatusCode::kDeadlineExceeded},
      {grpc::StatusCode::CANCELLED, absl::StatusCode::kCancelled},
      {grpc::StatusCode::UNAUTHENTICATED, absl::StatusCode::kUnauthenticated},
  };
  for (const auto& c : kCases) {
    absl::Status status = FromGrpcStatus(grpc::Status(c.grpc, "ReadRegion: offset 0x1000"));
    EXPECT_EQ(status.code(), c.absl);
    EXPECT_EQ(status.message(), "ReadRegion: offset 0x1000");
  }
}

TEST(StatusConvertTest, UnknownCodeNumbers) {
  EXPECT_EQ(StatusCodeFromInt(11), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(StatusCodeFromInt(16), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(StatusCodeFromInt(17), absl::StatusCode::kUnknown);
  EXPECT_EQ(StatusCodeFromInt(0xffffffff), absl::StatusCode::kUnknown);
}

TEST(StatusConvertTest, Annotate) {
  EXPECT_TRUE(Annotate(absl::OkStatus(), "x").ok());
  absl::Status status = Annotate(absl::NotFoundError("no such token"), "RegisterMemory");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "RegisterMemory: no such token");
}

}  // namespace
}  // namespace vfiod::client
