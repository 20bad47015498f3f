#include "daemon/transport/fd_channel_server.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/base/logging.h"
#include "daemon/transport/unix_socket.h"

namespace vfiod {
namespace {

using v1::FdChannelHello;
using v1::FdChannelReply;
using v1::FdChannelSend;
using v1::FdToken;
using v1::kFdChannelMagic;
using v1::kFdChannelMaxFdsPerMessage;

absl::Status SendReply(const UniqueFd& channel, uint32_t sequence, const absl::Status& status,
                       const std::vector<std::array<uint8_t, v1::kFdTokenBytes>>& tokens) {
  FdChannelReply reply;
  std::memset(&reply, 0, sizeof(reply));
  reply.magic = kFdChannelMagic;
  reply.sequence = sequence;
  reply.status_code = static_cast<uint32_t>(status.code());
  std::vector<uint8_t> bytes;
  if (status.ok()) {
    reply.count = static_cast<uint32_t>(tokens.size());
  } else {
    const absl::string_view text = status.message();
    const size_t length = std::min(text.size(), sizeof(reply.message) - 1);
    std::memcpy(reply.message, text.data(), length);
  }
  bytes.resize(sizeof(reply) + (status.ok() ? tokens.size() * sizeof(FdToken) : 0));
  std::memcpy(bytes.data(), &reply, sizeof(reply));
  if (status.ok()) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::memcpy(bytes.data() + sizeof(reply) + i * sizeof(FdToken), tokens[i].data(),
                  sizeof(FdToken));
    }
  }
  return SendUnixMessage(channel, bytes);
}

}  // namespace

absl::Status SendFdChannelHello(const UniqueFd& channel,
                                const std::array<uint8_t, v1::kFdChannelKeyBytes>& key) {
  FdChannelHello hello;
  std::memset(&hello, 0, sizeof(hello));
  hello.magic = kFdChannelMagic;
  hello.version = v1::kFdChannelVersion;
  hello.max_fds_per_message = static_cast<uint16_t>(kFdChannelMaxFdsPerMessage);
  std::memcpy(hello.channel_key, key.data(), key.size());
  return SendUnixMessage(
      channel, absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&hello), sizeof(hello)));
}

absl::StatusOr<FdChannelStep> ServeFdChannelMessage(const UniqueFd& channel,
                                                     FdBatchHandler handler) {
  // A buffer one byte larger than a request shows an over-long one even without MSG_TRUNC.
  absl::StatusOr<UnixMessage> received =
      ReceiveUnixMessage(channel, sizeof(FdChannelSend) + 1, kFdChannelMaxFdsPerMessage);
  if (!received.ok()) return received.status();
  UnixMessage& message = *received;
  switch (message.kind) {
    case UnixMessage::Kind::kWouldBlock:
      return FdChannelStep::kIdle;
    case UnixMessage::Kind::kEndOfStream:
      return FdChannelStep::kClosed;
    case UnixMessage::Kind::kMessage:
      break;
  }

  uint32_t sequence = 0;
  absl::Status problem;
  if (message.data.size() >= sizeof(FdChannelSend)) {
    FdChannelSend header;
    std::memcpy(&header, message.data.data(), sizeof(header));
    if (header.magic == kFdChannelMagic) sequence = header.sequence;
    if (message.data_truncated || message.data.size() != sizeof(FdChannelSend)) {
      problem = absl::InvalidArgumentError(
          absl::StrCat("fd channel message is longer than FdChannelSend (",
                       sizeof(FdChannelSend), " bytes)"));
    } else if (header.magic != kFdChannelMagic) {
      problem = absl::InvalidArgumentError(
          absl::StrCat("fd channel message has bad magic 0x", absl::Hex(header.magic)));
    }
  } else {
    problem = absl::InvalidArgumentError(absl::StrCat(
        "fd channel message is ", message.data.size(), " bytes; FdChannelSend is ",
        sizeof(FdChannelSend)));
  }
  if (problem.ok()) {
    if (message.fds_truncated) {
      problem = absl::InvalidArgumentError(absl::StrCat(
          "too many fds or truncated control data in one message (at most ",
          kFdChannelMaxFdsPerMessage, " fds)"));
    } else if (message.fds.empty()) {
      problem = absl::InvalidArgumentError("fd channel message carries no fds");
    } else if (message.fds.size() > kFdChannelMaxFdsPerMessage) {
      problem = absl::InvalidArgumentError(absl::StrCat("fd channel message carries ",
                                                        message.fds.size(),
                                                        " fds; at most ",
                                                        kFdChannelMaxFdsPerMessage));
    }
  }
  if (!problem.ok()) {
    // Close whatever arrived before answering.
    const size_t dropped = message.fds.size();
    message.fds.clear();
    LogInfo("fd channel message refused",
            {{"reason", std::string(problem.message())}, {"fds_closed", std::to_string(dropped)}});
    absl::Status sent = SendReply(channel, sequence, problem, {});
    if (!sent.ok()) return sent;
    return FdChannelStep::kServed;
  }

  const size_t count = message.fds.size();
  absl::StatusOr<std::vector<std::array<uint8_t, v1::kFdTokenBytes>>> tokens =
      handler(std::move(message.fds));
  absl::Status sent;
  if (!tokens.ok()) {
    sent = SendReply(channel, sequence, tokens.status(), {});
  } else if (tokens->size() != count) {
    LogError("fd batch handler returned the wrong number of tokens",
             {{"fds", std::to_string(count)}, {"tokens", std::to_string(tokens->size())}});
    sent = SendReply(channel, sequence,
                     absl::InternalError("internal error: token count mismatch"), {});
  } else {
    sent = SendReply(channel, sequence, absl::OkStatus(), *tokens);
  }
  if (!sent.ok()) return sent;
  return FdChannelStep::kServed;
}

}  // namespace vfiod
