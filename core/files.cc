#include "core/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/reasons.h"

namespace carebroker {

absl::StatusOr<std::string> ReadFileToString(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgument(reason::kFileUnreadable, absl::StrCat("cannot read ", what, " ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool WriteFileAtomically(const std::string& dir, const std::string& name, absl::string_view data) {
  const std::string tmp = dir + "/." + name + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n <= 0) {
      ::close(fd);
      return false;
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) return false;
  if (::rename(tmp.c_str(), (dir + "/" + name).c_str()) != 0) return false;
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return false;
  const bool ok = ::fsync(dfd) == 0;
  ::close(dfd);
  return ok;
}

}  // namespace carebroker

namespace carebroker {

absl::Status ProbeWritable(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/.carebroker-probe-", getpid());
  auto fail = [&dir](absl::string_view step) {
    return Error(absl::StatusCode::kUnavailable, reason::kStoreUnavailable,
                 absl::StrCat("the store's folder ", dir, " cannot be written (", step, ": ", std::strerror(errno), ")"));
  };
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return fail("create");
  static const char kBlock[4096] = {};
  absl::Status out = absl::OkStatus();
  if (write(fd, kBlock, sizeof kBlock) != static_cast<ssize_t>(sizeof kBlock)) {
    out = fail("write");
  } else if (fdatasync(fd) != 0) {
    out = fail("sync");
  }
  close(fd);
  unlink(path.c_str());
  return out;
}

}  // namespace carebroker
