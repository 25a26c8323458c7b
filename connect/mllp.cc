#include "connect/mllp.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace carebroker::mllp {

std::string Frame(absl::string_view message) {
  std::string out;
  out.reserve(message.size() + 3);
  out.push_back(kStartBlock);
  out.append(message.data(), message.size());
  out.push_back(kEndBlock);
  out.push_back(kCarriageReturn);
  return out;
}

absl::Status Deframer::Feed(absl::string_view bytes, std::vector<std::string>* out) {
  for (char c : bytes) {
    if (!inside_) {
      if (c == kStartBlock) {
        inside_ = true;
        partial_.clear();
      } else if (c != '\r' && c != '\n') {
        return absl::InvalidArgumentError("MLLP: bytes outside a frame (expected 0x0B)");
      }
      continue;
    }
    if (saw_end_) {
      saw_end_ = false;
      if (c == kCarriageReturn) {
        out->push_back(std::move(partial_));
        partial_.clear();
        inside_ = false;
        continue;
      }
      partial_.push_back(kEndBlock);  // a lone 0x1C is data
    }
    if (c == kEndBlock) {
      saw_end_ = true;
      continue;
    }
    if (partial_.size() >= max_) {
      return absl::ResourceExhaustedError(absl::StrCat("MLLP: frame exceeds ", max_, " bytes"));
    }
    partial_.push_back(c);
  }
  return absl::OkStatus();
}

namespace {

absl::StatusOr<addrinfo*> Resolve(const std::string& host_port, bool passive) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return absl::InvalidArgumentError("expected host:port");
  std::string host = host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = host_port.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", host_port));
  }
  return res;
}

}  // namespace

absl::StatusOr<int> Listen(const std::string& host_port, int* bound_port) {
  auto res = Resolve(host_port, true);
  if (!res.ok()) return res.status();
  const int fd = ::socket((*res)->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const bool ok = fd >= 0 && ::bind(fd, (*res)->ai_addr, (*res)->ai_addrlen) == 0 && ::listen(fd, 64) == 0;
  ::freeaddrinfo(*res);
  if (!ok) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host_port, ": ", std::strerror(e)));
  }
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *bound_port = ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&a)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&a)->sin_port);
  return fd;
}

absl::StatusOr<int> Dial(const std::string& host_port, absl::Duration timeout) {
  auto res = Resolve(host_port, false);
  if (!res.ok()) return res.status();
  const int fd = ::socket((*res)->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool ok = fd >= 0 && ::connect(fd, (*res)->ai_addr, (*res)->ai_addrlen) == 0;
  ::freeaddrinfo(*res);
  if (!ok) {
    const int e = errno;
    if (fd >= 0) ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", host_port, ": ", std::strerror(e)));
  }
  timeval tv{static_cast<time_t>(absl::ToInt64Seconds(timeout)), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

absl::StatusOr<std::string> ReadFrame(int fd, size_t max_frame_bytes, absl::Duration timeout) {
  Deframer d(max_frame_bytes);
  std::vector<std::string> frames;
  const absl::Time deadline = absl::Now() + timeout;
  char buf[4096];
  while (frames.empty()) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("MLLP: no answer in time");
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return absl::UnavailableError("MLLP: the peer closed the connection");
    if (absl::Status s = d.Feed(absl::string_view(buf, static_cast<size_t>(n)), &frames); !s.ok()) return s;
  }
  return std::move(frames.front());
}

}  // namespace carebroker::mllp
