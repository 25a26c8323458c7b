// Every reason code, as a named constant. A reason is the machine-readable
// half of an error (core/status.h): UPPER_SNAKE, stable across releases,
// carried to clients as google.rpc.ErrorInfo.reason and written into audit
// entries and non-delivery reports. Code compares reasons through these
// names, never through string literals; tests assert the spelled-out values,
// which are the wire contract.
#pragma once

namespace carebroker::reason {

// Input: the request or payload is malformed (INVALID_ARGUMENT).
inline constexpr char kWorkflowInvalid[] = "WORKFLOW_INVALID";
inline constexpr char kPurposeInvalid[] = "PURPOSE_INVALID";
inline constexpr char kPurposeUnknown[] = "PURPOSE_UNKNOWN";
inline constexpr char kRecipientInvalid[] = "RECIPIENT_INVALID";
inline constexpr char kRouteUnknown[] = "ROUTE_UNKNOWN";
inline constexpr char kRouteNeedsRecord[] = "ROUTE_NEEDS_RECORD";
inline constexpr char kRouteConflict[] = "ROUTE_CONFLICT";
// A route that names no registered organisation for this record (FAILED_PRECONDITION).
inline constexpr char kUnroutable[] = "UNROUTABLE";
inline constexpr char kUnknownRecipient[] = "UNKNOWN_RECIPIENT";
inline constexpr char kPayloadEmpty[] = "PAYLOAD_EMPTY";
inline constexpr char kPayloadMalformed[] = "PAYLOAD_MALFORMED";
inline constexpr char kMessageTooLarge[] = "MESSAGE_TOO_LARGE";
inline constexpr char kContentTypeInvalid[] = "CONTENT_TYPE_INVALID";
inline constexpr char kFormatUnknown[] = "FORMAT_UNKNOWN";
inline constexpr char kFormatUnsupported[] = "FORMAT_UNSUPPORTED";
inline constexpr char kIdempotencyKeyInvalid[] = "IDEMPOTENCY_KEY_INVALID";
inline constexpr char kLocalReferenceInvalid[] = "LOCAL_REFERENCE_INVALID";
inline constexpr char kMessageIdInvalid[] = "MESSAGE_ID_INVALID";
inline constexpr char kClaimInvalid[] = "CLAIM_INVALID";
inline constexpr char kAckInvalid[] = "ACK_INVALID";
inline constexpr char kRejectionInvalid[] = "REJECTION_INVALID";
inline constexpr char kQueryInvalid[] = "QUERY_INVALID";
inline constexpr char kReceiveOpenRequired[] = "RECEIVE_OPEN_REQUIRED";
inline constexpr char kReceiveAlreadyOpen[] = "RECEIVE_ALREADY_OPEN";
inline constexpr char kJustificationInvalid[] = "JUSTIFICATION_INVALID";
inline constexpr char kFieldRequired[] = "FIELD_REQUIRED";
inline constexpr char kFieldTooLong[] = "FIELD_TOO_LONG";
inline constexpr char kScopeInvalid[] = "SCOPE_INVALID";
inline constexpr char kConsentChangeInvalid[] = "CONSENT_CHANGE_INVALID";
inline constexpr char kDirectiveKindRequired[] = "DIRECTIVE_KIND_REQUIRED";
inline constexpr char kDirectiveNotFound[] = "DIRECTIVE_NOT_FOUND";
inline constexpr char kDirectiveNotStanding[] = "DIRECTIVE_NOT_STANDING";
inline constexpr char kAuditReadInvalid[] = "AUDIT_READ_INVALID";
inline constexpr char kProofOutOfRange[] = "PROOF_OUT_OF_RANGE";
inline constexpr char kLocalIdentifierInvalid[] = "LOCAL_IDENTIFIER_INVALID";
inline constexpr char kReviewOutcomeInvalid[] = "REVIEW_OUTCOME_INVALID";
inline constexpr char kReviewNoteInvalid[] = "REVIEW_NOTE_INVALID";
inline constexpr char kOverrideNotFound[] = "OVERRIDE_NOT_FOUND";
inline constexpr char kFieldPathInvalid[] = "FIELD_PATH_INVALID";

// The adapters: what a payload in a known format got wrong.
inline constexpr char kNhsNumberInvalid[] = "NHS_NUMBER_INVALID";
inline constexpr char kDateInvalid[] = "DATE_INVALID";
inline constexpr char kHl7Invalid[] = "HL7_INVALID";
inline constexpr char kHl7RequiredMissing[] = "HL7_REQUIRED_MISSING";
inline constexpr char kHl7Unsupported[] = "HL7_UNSUPPORTED";
inline constexpr char kHl7EventUnsupported[] = "HL7_EVENT_UNSUPPORTED";
inline constexpr char kFhirInvalid[] = "FHIR_INVALID";
// A document's declaration (a multipart manifest) is unusable.
inline constexpr char kDocumentInvalid[] = "DOCUMENT_INVALID";
inline constexpr char kFhirUnsupported[] = "FHIR_UNSUPPORTED";
// FHIR of another version than R4 (STU3, DSTU2: CareConnect profiles,
// ReferralRequest, Encounter.patient), which read as R4 would be read wrong.
inline constexpr char kFhirVersionUnsupported[] = "FHIR_VERSION_UNSUPPORTED";
inline constexpr char kCouncilJsonInvalid[] = "COUNCIL_JSON_INVALID";
inline constexpr char kCsvInvalid[] = "CSV_INVALID";
inline constexpr char kCldInvalid[] = "CLD_INVALID";
inline constexpr char kCldUnsupported[] = "CLD_UNSUPPORTED";

// Policy: why a message was denied (PERMISSION_DENIED), or how it was allowed.
inline constexpr char kNoAgreement[] = "NO_AGREEMENT";
inline constexpr char kAgreementExpired[] = "AGREEMENT_EXPIRED";
inline constexpr char kAgreementNotYetValid[] = "AGREEMENT_NOT_YET_VALID";
inline constexpr char kPayloadKindNotAllowed[] = "PAYLOAD_KIND_NOT_ALLOWED";
inline constexpr char kOverrideJustificationMissing[] = "OVERRIDE_JUSTIFICATION_MISSING";
inline constexpr char kConsentDissent[] = "CONSENT_DISSENT";
inline constexpr char kConsentRequired[] = "CONSENT_REQUIRED";
inline constexpr char kNationalOptOut[] = "NATIONAL_OPT_OUT";
inline constexpr char kSafeguardingOverride[] = "SAFEGUARDING_OVERRIDE";
inline constexpr char kPseudonymKeyMissing[] = "PSEUDONYM_KEY_MISSING";

// Who is calling: certificates and roles (UNAUTHENTICATED, PERMISSION_DENIED).
inline constexpr char kCertificateRequired[] = "CERTIFICATE_REQUIRED";
inline constexpr char kCertificateInvalid[] = "CERTIFICATE_INVALID";
inline constexpr char kCertificateUntrusted[] = "CERTIFICATE_UNTRUSTED";
inline constexpr char kCertificateExpired[] = "CERTIFICATE_EXPIRED";
inline constexpr char kCertificateNotYetValid[] = "CERTIFICATE_NOT_YET_VALID";
inline constexpr char kCertificateRevoked[] = "CERTIFICATE_REVOKED";
// The CRL in force is past its next-update time and tls.crl_expired is refuse.
inline constexpr char kCrlExpired[] = "CRL_EXPIRED";
inline constexpr char kCertificateIdentityInvalid[] = "CERTIFICATE_IDENTITY_INVALID";
inline constexpr char kUnknownOrganisation[] = "UNKNOWN_ORGANISATION";
inline constexpr char kRoleNotAllowed[] = "ROLE_NOT_ALLOWED";
// The MESH front door's Authorization token (broker/mesh/auth.h).
inline constexpr char kMeshTokenInvalid[] = "MESH_TOKEN_INVALID";
inline constexpr char kMeshTokenStale[] = "MESH_TOKEN_STALE";
inline constexpr char kMeshTokenReused[] = "MESH_TOKEN_REUSED";
inline constexpr char kMeshMailboxMismatch[] = "MESH_MAILBOX_MISMATCH";
// A request's mailbox (path, token or mex-to) is not registered, or belongs
// to another organisation than the client certificate's.
inline constexpr char kMeshMailboxUnknown[] = "MESH_MAILBOX_UNKNOWN";
inline constexpr char kMeshMailboxNotYours[] = "MESH_MAILBOX_NOT_YOURS";
// A MESH workflow id not in mesh.workflows (MESH's error 17).
inline constexpr char kMeshWorkflowUnknown[] = "MESH_WORKFLOW_UNKNOWN";
// A MESH request carebroker cannot take: an unknown operation, a bad
// query parameter, a chunk range or encoding it does not accept.
inline constexpr char kMeshRequestInvalid[] = "MESH_REQUEST_INVALID";
// The MESH front door's send headers (broker/mesh/headers.h).
inline constexpr char kMeshHeaderMalformed[] = "MESH_HEADER_MALFORMED";
inline constexpr char kMeshHeaderPersonalData[] = "MESH_HEADER_PERSONAL_DATA";

// Capacity (RESOURCE_EXHAUSTED).
inline constexpr char kMemoryBudgetExhausted[] = "MEMORY_BUDGET_EXHAUSTED";
inline constexpr char kTooManyStreams[] = "TOO_MANY_STREAMS";
inline constexpr char kExecutorFull[] = "EXECUTOR_FULL";

// What a client sees for INTERNAL and UNKNOWN errors: never their detail.
inline constexpr char kInternal[] = "INTERNAL";

// The store and the audit log.
inline constexpr char kStoreUnavailable[] = "STORE_UNAVAILABLE";
inline constexpr char kStoreClosed[] = "STORE_CLOSED";
inline constexpr char kStoreCorrupt[] = "STORE_CORRUPT";
inline constexpr char kStoreSchemaNewer[] = "STORE_SCHEMA_NEWER";
inline constexpr char kStorePoolInvalid[] = "STORE_POOL_INVALID";
inline constexpr char kMessageNotFound[] = "MESSAGE_NOT_FOUND";
// Chunked messages (MESH): a chunk after the last, or out of range or order.
inline constexpr char kChunksComplete[] = "CHUNKS_COMPLETE";
inline constexpr char kChunkRangeInvalid[] = "CHUNK_RANGE_INVALID";
// A large send's stream ended before its last chunk (SendLarge).
inline constexpr char kChunksIncomplete[] = "CHUNKS_INCOMPLETE";
// A CLD submission's chunk already taken (minimised as it arrived, it is not
// replaced), or minimised from progress another upload has moved on.
inline constexpr char kChunkSuperseded[] = "CHUNK_SUPERSEDED";
inline constexpr char kIdempotencyKeyReused[] = "IDEMPOTENCY_KEY_REUSED";
inline constexpr char kAuditUnavailable[] = "AUDIT_UNAVAILABLE";
inline constexpr char kAuditLogDamaged[] = "AUDIT_LOG_DAMAGED";
inline constexpr char kNotAcknowledgedBeforeExpiry[] = "NOT_ACKNOWLEDGED_BEFORE_EXPIRY";
// Why a message is HELD (Track's held_reason, the non-delivery report's reason).
inline constexpr char kRejectedByRecipient[] = "REJECTED_BY_RECIPIENT";
inline constexpr char kMaxAttemptsReached[] = "MAX_ATTEMPTS_REACHED";
// An operator's action on a message that is not held (or held past its expiry).
inline constexpr char kMessageNotHeld[] = "MESSAGE_NOT_HELD";
// An operator's redirect or resend of a message that is not held or expired,
// whose body is gone, that was replaced already, or that came in chunks.
inline constexpr char kMessageNotResendable[] = "MESSAGE_NOT_RESENDABLE";
// A redirect to the organisation the message was already for (resend it).
inline constexpr char kRedirectSameRecipient[] = "REDIRECT_SAME_RECIPIENT";

// Starting up: config, agreements, files, listening.
inline constexpr char kConfigInvalid[] = "CONFIG_INVALID";
inline constexpr char kAgreementsInvalid[] = "AGREEMENTS_INVALID";
inline constexpr char kFileUnreadable[] = "FILE_UNREADABLE";
inline constexpr char kDataDirUnavailable[] = "DATA_DIR_UNAVAILABLE";
inline constexpr char kListenFailed[] = "LISTEN_FAILED";

}  // namespace carebroker::reason
