// A CLD submission: one Client Level Data file of many people's rows (a
// council's quarterly return), decided and minimised a row at a time as it
// arrives, whole or in chunks (MESH, SendLarge), and never held whole.
//
// The submission as a message is decided by intake (sender, recipient,
// workflow, purpose, for a person with nothing recorded). Each row is then
// decided as if its person's record were sent alone under what is in force
// when the row passes: an allowed row is minimised by its flow
// (pseudonyms, generalisation) and written in CLD; a denied row (the
// national data opt-out where it applies, dissent) is withheld and counted
// by its reason. Every row's decision is an audit entry about its person
// (ROW_RELEASED, ROW_WITHHELD), stored in the commit of the row's chunk.
// A row may break off at the end of a chunk: the broken-off part is
// carried, in v1::SubmissionProgress stored with the message, to the next
// chunk, which may be taken by another replica.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/config/config.h"
#include "carebroker/v1/audit.pb.h"
#include "carebroker/v1/submission.pb.h"
#include "broker/store/store.h"
#include "core/types.h"
#include "policy/consent.h"
#include "policy/engine.h"

namespace carebroker {
namespace audit {
class EntryMaker;
}

// A row longer than this is refused (CLD_INVALID): a CLD row is a few
// hundred bytes, and what a chunk carries to the next is at most one row.
inline constexpr size_t kMaxSubmissionRowBytes = 1 << 20;

struct SubmissionContext {
  const Config& config;
  const policy::PolicySet& policy;
  const policy::ConsentBook& consent;
  const audit::EntryMaker& entries;  // the rows' entries' subjects
  OrgCode sender;
  OrgCode recipient;
  MessageId id;  // the submission's
  absl::Time now;
};

// What a chunk gives: the CLD rows released, and an entry for every row
// read (NewMessage::row_audit, ChunkUpload::row_audit).
struct SubmissionChunk {
  std::string rows;
  std::vector<AuditRecord> row_audit;
};

// Reads the rows of chunk `n` that are complete (with what `progress`
// carries from the chunk before), decides and minimises each, and returns
// the CLD rows released, the header first when the header is read, with
// each row's entry. `last`:
// the file ends with this chunk, so a row without a final line break is its
// last. On success `progress` is advanced; on an error it is unchanged and
// the chunk may be sent again. Errors: CLD_INVALID, CSV_INVALID,
// DATE_INVALID and NHS_NUMBER_INVALID naming the chunk, row and column,
// never a value; PSEUDONYM_KEY_MISSING.
absl::StatusOr<SubmissionChunk> MinimiseSubmissionChunk(const SubmissionContext& context, absl::string_view chunk,
                                                    uint32_t n, bool last, v1::SubmissionProgress* progress);

// The SEND_ACCEPTED entry's fields a finished submission adds to the entry
// made when it was accepted: the payload digest (chained over its chunks as
// sent, SubmissionProgress.digest), the rows released and withheld in its
// detail, and every field released or withheld in any row. To be merged into that
// entry (MergeFrom: the detail replaced, the fields added).
v1::AuditEntry SubmissionAuditPatch(const v1::SubmissionProgress& progress);

// Is this a CLD submission's content type (the CLD format's)?
bool IsSubmissionContentType(absl::string_view content_type);

}  // namespace carebroker
