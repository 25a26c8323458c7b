// MLLP, the Minimal Lower Layer Protocol HL7 v2 travels over: each message
// framed as 0x0B <message> 0x1C 0x0D on a TCP connection.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace carebroker::mllp {

inline constexpr char kStartBlock = 0x0B;
inline constexpr char kEndBlock = 0x1C;
inline constexpr char kCarriageReturn = 0x0D;

std::string Frame(absl::string_view message);

// Splits a byte stream into messages. Bytes between frames other than CR
// and LF, and a frame longer than the limit, are errors (the connection
// cannot be trusted to be in step afterwards).
class Deframer {
 public:
  explicit Deframer(size_t max_frame_bytes) : max_(max_frame_bytes) {}
  // Appends each message completed by `bytes` to `out`.
  absl::Status Feed(absl::string_view bytes, std::vector<std::string>* out);
  // The start of the frame being read (for an answer to a refused frame).
  const std::string& partial() const { return partial_; }

 private:
  size_t max_;
  bool inside_ = false;
  bool saw_end_ = false;
  std::string partial_;
};

// Loopback or interface sockets, blocking, close-on-exec.
absl::StatusOr<int> Listen(const std::string& host_port, int* bound_port);
absl::StatusOr<int> Dial(const std::string& host_port, absl::Duration timeout);
bool WriteAll(int fd, absl::string_view data);
// Reads one framed message from `fd` within `timeout` (an ACK from a peer).
absl::StatusOr<std::string> ReadFrame(int fd, size_t max_frame_bytes, absl::Duration timeout);

}  // namespace carebroker::mllp
