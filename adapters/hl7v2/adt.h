// HL7 v2.4 ADT (the HSCIC ITK profile hospitals in England send) to and from
// the canonical CareRecord, and the ACKs that answer it.
//
// One ADT message is one person and at most one event:
//   A01 admit, A04 register outpatient      -> Admission
//   A05 pre-admit                           -> Admission, action PLANNED
//   A02 transfer                            -> Transfer
//   A03 discharge                           -> Discharge
//   A08 update encounter                    -> Discharge (PV1-45 set) or Admission, action UPDATE
//   A11 / A12 / A13 cancel admit / transfer / discharge -> the same, action CANCEL
//   A28 / A31 add / update person           -> PersonChange
//   A40 merge                               -> Merge (MRG-1 identifiers retired)
// The person comes from PID (and PD1-3 for the registered GP practice): the
// NHS number is the PID-3 repetition whose CX.4 is NHS, checked with
// Modulus 11; its status is PID-32 NSTS01..NSTS08; the other repetitions are
// local identifiers. Times without an offset are UK local time.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "adapters/common/values.h"
#include "adapters/hl7v2/er7.h"
#include "carebroker/v1/record.pb.h"

namespace carebroker::hl7 {

// What MSH says besides the record.
struct Header {
  std::string sending_application;    // MSH-3
  std::string sending_facility;       // MSH-4: ODS code of the sender
  std::string receiving_application;  // MSH-5
  std::string receiving_facility;     // MSH-6
  std::string control_id;             // MSH-10
  std::string trigger;                // MSH-9.2, e.g. "A03"
  absl::Time sent_at = absl::InfinitePast();  // MSH-7
};

struct Adt {
  Header header;
  v1::CareRecord record;
};

// Errors are INVALID_ARGUMENT with reason HL7_INVALID (structure, dates,
// codes), HL7_UNSUPPORTED (a message type or event not listed above) or
// NHS_NUMBER_INVALID, naming the field, never quoting patient data.
absl::StatusOr<Adt> ReadAdt(const Message& message, const adapters::ReadOptions& options = {});
absl::StatusOr<Adt> ReadAdt(absl::string_view er7, const Limits& limits = {}, const adapters::ReadOptions& options = {});

// The ADT message for a record of one person and at most one event (none
// reads as A31). header.trigger is ignored: the event decides it. Times are
// written in UTC with an explicit +0000. HL7_UNSUPPORTED for an event ADT
// cannot carry (care packages, assessments, ...) or more than one event.
absl::StatusOr<std::string> WriteAdt(const v1::CareRecord& record, const Header& header);

// The acknowledgement codes of original mode (table 0008).
enum class AckCode {
  kAccept,  // AA: committed
  kError,   // AE: the message is wrong or was refused; resending will not help
  kReject,  // AR: not processed (unsupported, or the broker unreachable); resend later
};

struct AckError {
  std::string code = "207";  // HL7 table 0357, e.g. 101, 102, 103, 200, 201, 207
  std::string text;          // no patient data
  std::string severity = "E";  // ERR-4 (HL7 table 0516): E error, W warning
};

// The ACK for `original` (the message as received): MSH with sender and
// receiver swapped, MSA-1 the code, MSA-2 echoing the original MSH-10, and,
// unless the code is AA, MSA-3 and an ERR segment with the error. When the
// original is too broken to read, MSA-2 is whatever MSH-10 could be found.
std::string MakeAck(absl::string_view original, AckCode code, const AckError& error, absl::Time now,
                    absl::string_view control_id);
// MakeAck with an ERR segment for each of `errors`, in order, whatever
// the code (an AA may carry warnings); MSA-3 is the first one's text unless
// the code is AA.
std::string MakeAckWithErrors(absl::string_view original, AckCode code, const std::vector<AckError>& errors,
                              absl::Time now, absl::string_view control_id);

// The table 0357 code and ACK code for an adapter or broker error.
AckError AckErrorFor(const absl::Status& status);

}  // namespace carebroker::hl7
