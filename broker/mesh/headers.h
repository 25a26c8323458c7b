// The mex-* headers of a MESH send (MESH.md 1.5), checked before anything
// is stored: a value with a control character, one over its length, or a
// URL in mex-to, mex-workflowid or mex-content-checksum is MESH's error 06
// (MalformedControlFile); an NHS number, or a date marked as a date of
// birth, in mex-subject, mex-localid or mex-filename is refused too (MESH's
// own guidance: these must not carry person-identifiable data). Errors name
// the headers, never their values.
#pragma once

#include "absl/status/status.h"
#include "broker/http/http_server.h"

namespace carebroker::mesh {

// INVALID_ARGUMENT with reason MESH_HEADER_MALFORMED or
// MESH_HEADER_PERSONAL_DATA, naming every offending header; OK otherwise.
// `headers`: names lower-cased (as http::HttpRequest holds them).
absl::Status CheckSendHeaders(const http::Headers& headers);

// Whether `value` holds an NHS number (ten digits, alone or as 3-3-4 with
// spaces or dashes, with a right Modulus 11 check digit) or a date written
// right after "DOB", "D.O.B", "born" or "birth" (spaces and : . - = between).
bool HoldsPersonalData(absl::string_view value);

}  // namespace carebroker::mesh
