#include "core/canonical.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

namespace carebroker {

std::string Canonical(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream zero(&out);
    google::protobuf::io::CodedOutputStream coded(&zero);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }  // flushed into `out`
  return out;
}

}  // namespace carebroker
