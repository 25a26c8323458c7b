#include "broker/cli/ctl/commands.h"

#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"

namespace carebroker::ctl {

void Run::Online(std::function<int()> f) {
  action = [this, f = std::move(f)] {
    if (auto s = RequireTls(g.tls); !s.ok()) {
      err << "carebrokerctl: " << s.message() << "\n";
      return 2;
    }
    return f();
  };
}

std::string StatusName(v1::MessageStatus s) {
  return v1::MessageStatus_Name(s).substr(std::string("MESSAGE_STATUS_").size());
}

std::string Rfc3339(const google::protobuf::Timestamp& t) {
  return t.seconds() == 0 && t.nanos() == 0 ? "" : google::protobuf::util::TimeUtil::ToString(t);
}

int RpcFailed(std::ostream& err, const grpc::Status& s) {
  err << "carebrokerctl: " << DescribeStatus(s) << "\n";
  return 1;
}

void SetDeadline(grpc::ClientContext& ctx, const Global& g) {
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(g.timeout_s * 1000)));
}

int PrintJson(const google::protobuf::Message& m, std::ostream& out) {
  std::string text;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(m, &text, o);
  out << text;
  return 0;
}

}  // namespace carebroker::ctl
