// SendLarge and Download: payloads larger than one gRPC message, on the
// chunk storage the MESH front door uses (Store::AppendChunk, Store::Fetch
// by piece).
//
// SendLarge reads one request at a time: its `start` goes through the send
// pipeline (decided, minimised, audited) as the first chunk of a chunked
// message; each further chunk is stored before the next is read, so a
// stream holds at most one chunk (limits.max_message_bytes) in memory and
// gRPC flow control paces the sender.
//
// Download writes the message's metadata, then its payload in writes of at
// most kDownloadWriteBytes (under gRPC's default 4 MiB receive limit),
// reading one stored piece (mailbox::kPieceBytes) at a time, one write in
// flight.
#pragma once

#include <grpcpp/support/server_callback.h>

#include "broker/server/identity.h"
#include "broker/server/service_deps.h"
#include "carebroker/v1/exchange.pb.h"
#include "core/types.h"

namespace carebroker {

inline constexpr size_t kDownloadWriteBytes = 1 << 20;
// MESH's limit for one message through its API, and SendLarge's.
inline constexpr uint64_t kMaxLargeMessageBytes = uint64_t{20} << 30;
// The most one SendLarge chunk (`start`'s payload included) may hold: under
// the 50 MB protobuf reserves at once for a bytes field it parses, past
// which it grows the field by doubling and a chunk costs twice its size.
inline constexpr size_t kMaxLargeChunkBytes = size_t{32} << 20;

// Reactors for an authorised agency `id` whose stream has been counted
// (EnterStream); each deletes itself when done.
grpc::ServerReadReactor<v1::LargeSendRequest>* NewSendLargeReactor(const ServiceDeps& d, Identity id,
                                                                  v1::SendReceipt* receipt);
grpc::ServerWriteReactor<v1::DownloadResponse>* NewDownloadReactor(const ServiceDeps& d, Identity id, MessageId message);

}  // namespace carebroker
