// TextTable: rows of text cells rendered as columns padded to their widest cell, for vfioctl's
// human-readable output. Not thread-safe.
#ifndef VFIOD_CLIENT_CLI_TEXT_TABLE_H_
#define VFIOD_CLIENT_CLI_TEXT_TABLE_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace vfiod::cli {

class TextTable {
 public:
  // The first row, printed like the others.
  explicit TextTable(std::vector<std::string> header);
  // A row; rows may have fewer cells than the header.
  void Add(std::vector<std::string> row);
  // Every row as a line starting with `indent`, cells separated by at least two spaces, no
  // trailing spaces.
  std::string Render(absl::string_view indent = "  ") const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace vfiod::cli

#endif  // VFIOD_CLIENT_CLI_TEXT_TABLE_H_
