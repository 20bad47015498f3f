#include "client/cli/output.h"

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

namespace vfiod::cli {

Json Json64(uint64_t value) { return absl::StrCat(value); }

std::string HexBytes(absl::string_view data) {
  std::string out;
  out.reserve(2 * data.size());
  for (char c : data) absl::StrAppendFormat(&out, "%02x", static_cast<uint8_t>(c));
  return out;
}

std::string ProtoJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string json;
  // Printing a well-formed message cannot fail; the {} fallback keeps the output valid JSON.
  if (!google::protobuf::util::MessageToJsonString(message, &json, options).ok()) return "{}";
  return json;
}

Json ProtoToJsonValue(const google::protobuf::Message& message) {
  return Json::parse(ProtoJson(message));
}

Output::Output(bool json, std::ostream& out) : json_(json), out_(out) {}

void Output::Print(const Json& value, absl::string_view text) {
  if (json_) {
    // Text from the daemon (a device name, a message) may not be UTF-8: replace, never throw.
    out_ << value.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
  } else {
    out_ << text;
  }
}

void Output::Print(const google::protobuf::Message& message, absl::string_view text) {
  if (json_) {
    out_ << ProtoJson(message) << "\n";
  } else {
    out_ << text;
  }
}

void Output::Done(absl::string_view text) {
  if (json_) {
    out_ << "{}\n";
  } else if (!text.empty()) {
    out_ << text << "\n";
  }
}

void Output::Raw(absl::string_view text) { out_ << text; }

void Output::Flush() { out_.flush(); }

}  // namespace vfiod::cli
