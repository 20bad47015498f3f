// A standalone main for a libFuzzer target in builds without libFuzzer (the default gcc build):
// runs LLVMFuzzerTestOneInput once on every file named on the command line, or on every regular
// file in a directory named there. Exits 1 when no input was found or the target rejects one
// as malformed (returns -1): a misconfigured corpus must not pass silently. A failing input
// aborts inside the target.
//
//   device_model_fuzz_replay FILE_OR_DIR...
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

namespace {

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void Collect(const std::string& path, std::vector<std::string>* files) {
  if (!IsDirectory(path)) {
    files->push_back(path);
    return;
  }
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return;
  std::vector<std::string> entries;
  while (struct dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    entries.push_back(path + "/" + entry->d_name);
  }
  ::closedir(dir);
  std::sort(entries.begin(), entries.end());
  for (const std::string& entry : entries) {
    if (!IsDirectory(entry)) files->push_back(entry);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] == '-') continue;  // libFuzzer flags (e.g. -runs=1): ignored here
    Collect(argv[i], &files);
  }
  if (files.empty()) {
    std::fprintf(stderr, "replay: no input files (usage: %s FILE_OR_DIR...)\n", argv[0]);
    return 1;
  }
  for (const std::string& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "replay: cannot read %s\n", file.c_str());
      return 1;
    }
    const std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", file.c_str(), data.size());
    if (LLVMFuzzerTestOneInput(data.data(), data.size()) == -1) {
      // The target rejected it as malformed: a checked-in input must be a real one.
      std::fprintf(stderr, "replay: %s is not a valid input for this target\n", file.c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "replay: %zu input(s) passed\n", files.size());
  return 0;
}
