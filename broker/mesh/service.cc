#include "broker/mesh/service.h"

#include <zlib.h>

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "audit/log.h"
#include "broker/exchange/exchange_metrics.h"
#include "broker/exchange/policy_gate.h"
#include "broker/exchange/send_pipeline.h"
#include "adapters/formats.h"
#include "broker/mesh/auth.h"
#include "broker/mesh/headers.h"
#include "broker/server/identity.h"
#include "broker/store/mailbox_rules.h"
#include "broker/store/store.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/reasons.h"
#include "core/status.h"
#include "core/time.h"
#include "core/vocabulary.h"

namespace carebroker::mesh {
namespace {

using http::HttpRequest;
using http::HttpResponse;
using Json = nlohmann::json;

// The mex-* headers a send may carry that travel to the recipient as they
// came (the message's metadata, NewMessage::meta).
constexpr absl::string_view kPassThrough[] = {
    "mex-subject",         "mex-localid",          "mex-partnerid",         "mex-filename",
    "mex-content-checksum", "mex-content-compressed", "mex-content-encrypted", "mex-content-type",
};

enum class Version { kV1, kV2 };

constexpr int kInboxStorePage = 1000;   // messages read from the store per round
constexpr int kInboxStoreRounds = 50;   // rounds per listing (a mailbox of many workflows)
constexpr char kContinuePrefix[] = "carebroker-inbox-";

std::string MeshTime(absl::Time t) { return absl::FormatTime("%Y%m%d%H%M%S", t, absl::UTCTimeZone()); }
std::string IsoTime(absl::Time t) { return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone()); }

HttpResponse JsonResponse(int status, const Json& body) {
  return HttpResponse{status, "application/json", body.dump(), {}};
}

int HexDigit(char c) {
  if (absl::ascii_isdigit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A path segment or query value, %XX decoded (and + as a space in a query).
std::string PercentDecode(absl::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < s.size() && (hi = HexDigit(s[i + 1])) >= 0 && (lo = HexDigit(s[i + 2])) >= 0) {
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (s[i] == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// A MESH workflow filter (inbox `workflow_filter`): WF equals, !WF not
// equals, WF* begins with, *WF* contains, each negated with a leading !.
struct WorkflowFilter {
  bool negate = false;
  enum { kAll, kEquals, kPrefix, kContains } kind = kAll;
  std::string text;

  bool Matches(absl::string_view workflow) const {
    bool hit = true;
    switch (kind) {
      case kAll: return true;
      case kEquals: hit = workflow == text; break;
      case kPrefix: hit = absl::StartsWith(workflow, text); break;
      case kContains: hit = absl::StrContains(workflow, text); break;
    }
    return hit != negate;
  }
};

absl::StatusOr<WorkflowFilter> ParseWorkflowFilter(absl::string_view s) {
  WorkflowFilter f;
  if (s.empty()) return f;
  if (s.size() < 2 || s.size() > 255) {
    return InvalidArgument(reason::kMeshRequestInvalid, "workflow_filter must be 2 to 255 characters");
  }
  f.negate = absl::ConsumePrefix(&s, "!");
  const bool lead = absl::ConsumePrefix(&s, "*");
  const bool trail = absl::ConsumeSuffix(&s, "*");
  if (s.empty() || absl::StrContains(s, '*') || (lead && !trail)) {
    return InvalidArgument(reason::kMeshRequestInvalid,
                           "workflow_filter is WF, WF*, *WF* or one of those after !");
  }
  f.kind = lead ? WorkflowFilter::kContains : trail ? WorkflowFilter::kPrefix : WorkflowFilter::kEquals;
  f.text = std::string(s);
  return f;
}

// A message's metadata as stored (a JSON object of header names to values).
Json ParseMeta(absl::string_view meta) {
  if (meta.empty()) return Json::object();
  Json j = Json::parse(meta, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : Json::object();
}

std::string MetaValue(const Json& meta, absl::string_view key) {
  auto it = meta.find(std::string(key));
  return it != meta.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The MESH workflow id a message goes under: the one it was sent with, or
// the first mesh.workflows entry for its carebroker workflow, or that.
std::string MeshWorkflowOf(const Config& config, absl::string_view workflow, const Json& meta) {
  std::string sent = MetaValue(meta, "mex-workflowid");
  if (!sent.empty()) return sent;
  for (const auto& w : config.proto().mesh().workflows()) {
    if (w.workflow() == workflow) return w.id();
  }
  return std::string(workflow);
}

// The first mailbox of an organisation, or "" when it has none.
std::string FirstMailboxOf(const Config& config, const OrgCode& org) {
  for (const auto& m : config.proto().mesh().mailboxes()) {
    if (m.organisation() == org.str()) return m.id();
  }
  return "";
}

bool Receives(const v1::MeshMailbox& mb, absl::string_view mesh_workflow) {
  return mb.workflows().empty() ||
         std::find(mb.workflows().begin(), mb.workflows().end(), mesh_workflow) != mb.workflows().end();
}

// Whether a message of the mailbox's organisation shows in this mailbox: one
// sent to a mailbox of the organisation shows there only; one sent to the
// organisation (by gRPC, or a report) in each mailbox receiving its workflow.
bool InMailbox(const Config& config, const v1::MeshMailbox& mb, absl::string_view workflow, const Json& meta) {
  const std::string to = MetaValue(meta, "mex-to");
  if (!to.empty()) {
    const v1::MeshMailbox* addressed = config.FindMeshMailbox(to);
    if (addressed != nullptr && addressed->organisation() == mb.organisation()) return addressed->id() == mb.id();
  }
  if (workflow == kNdrWorkflow) return true;
  return Receives(mb, MeshWorkflowOf(config, workflow, meta));
}

// Inflates a gzip body, refusing one that would exceed `limit` bytes.
absl::StatusOr<std::string> Gunzip(absl::string_view in, uint64_t limit) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return absl::InternalError("zlib");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  std::string out;
  char buf[64 * 1024];
  int rc;
  do {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&z);
      return InvalidArgument(reason::kPayloadMalformed, "the body is not valid gzip (Content-Encoding: gzip)");
    }
    out.append(buf, sizeof buf - z.avail_out);
    if (out.size() > limit) {
      inflateEnd(&z);
      return Error(absl::StatusCode::kResourceExhausted, reason::kMessageTooLarge,
                   absl::StrCat("the message is larger than ", limit, " bytes once decompressed"));
    }
  } while (rc != Z_STREAM_END && (z.avail_in > 0 || z.avail_out == 0));
  inflateEnd(&z);
  if (rc != Z_STREAM_END) return InvalidArgument(reason::kPayloadMalformed, "the gzip body is truncated");
  return out;
}

// mex-chunk-range "n:N": chunk n of N, 1 <= n <= N <= mailbox::kMaxChunks.
absl::StatusOr<std::pair<uint32_t, uint32_t>> ParseChunkRange(absl::string_view s) {
  std::pair<absl::string_view, absl::string_view> parts = absl::StrSplit(s, absl::MaxSplits(':', 1));
  uint32_t n = 0, total = 0;
  if (!absl::SimpleAtoi(parts.first, &n) || !absl::SimpleAtoi(parts.second, &total) || n < 1 || n > total ||
      total > mailbox::kMaxChunks) {
    return InvalidArgument(reason::kChunkRangeInvalid, "mex-chunk-range is n:N with 1 <= n <= N <= 10000");
  }
  return std::make_pair(n, total);
}

// A request's body, decompressed when Content-Encoding says gzip, at most
// `limit` bytes.
absl::StatusOr<std::string> Body(HttpRequest& r, uint64_t limit) {
  const absl::string_view encoding = r.Header("content-encoding");
  if (encoding.empty() || encoding == "identity") {
    if (r.body.size() > limit) {
      return Error(absl::StatusCode::kResourceExhausted, reason::kMessageTooLarge,
                   absl::StrCat("the body is larger than ", limit, " bytes"));
    }
    return std::move(r.body);
  }
  if (absl::EqualsIgnoreCase(encoding, "gzip")) return Gunzip(r.body, limit);
  return InvalidArgument(reason::kMeshRequestInvalid, "Content-Encoding must be gzip, or none");
}

}  // namespace

struct MeshService::Call {
  explicit Call(MeshService& s) : service(s) {}
  ~Call() { service.Finished(); }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  MeshService& service;
  HttpRequest req;
  http::Reply reply;
  Version version = Version::kV1;
  std::vector<std::string> path;  // decoded segments after /messageexchange
  std::map<std::string, std::string> query;
  std::shared_ptr<const PolicyGate::InForce> in_force;  // one config for the whole request, across a reload
  const Config& config() const { return *in_force->config; }
  Identity who;
  const v1::MeshMailbox* mailbox = nullptr;  // the authenticated mailbox (in *config)
  absl::Time now;
  std::string internal_id;  // names this request in errors (and nothing else)

  void Answer(HttpResponse r) {
    r.headers.emplace_back("mex-internal-id", internal_id);
    reply(std::move(r));
  }

  // An error in MESH's shape (v2 {message_id, internal_id, detail[]}, v1
  // {messageID, errorEvent, errorCode, errorDescription}), with carebroker's
  // reason code beside MESH's.
  void Fail(int status, absl::string_view event, absl::string_view code, const absl::Status& why,
            absl::string_view message_id = "") {
    std::string reason = ReasonOf(why);
    if (reason.empty()) reason = reason::kInternal;
    Json body;
    if (version == Version::kV2) {
      body = {{"message_id", message_id},
              {"internal_id", internal_id},
              {"detail", Json::array({{{"event", event}, {"code", code}, {"msg", why.message()}, {"reason", reason}}})}};
    } else {
      body = {{"messageID", message_id},       {"errorEvent", event}, {"errorCode", code},
              {"errorDescription", why.message()}, {"reason", reason}, {"internalID", internal_id}};
    }
    Answer(JsonResponse(status, body));
  }
};

void MeshService::Handle(HttpRequest request, http::Reply reply) {
  {
    absl::MutexLock l(&mu_);
    if (draining_) {
      reply(HttpResponse{503, "application/json", R"({"detail":"the broker is shutting down"})", {}});
      return;
    }
    ++in_flight_;
  }
  auto call = std::make_shared<Call>(*this);
  call->req = std::move(request);
  call->reply = std::move(reply);
  call->now = d_.clock.Now();
  call->internal_id = NewMessageId(call->now).str();
  call->in_force = d_.policy.in_force();
  Route(std::move(call));
}

void MeshService::Refuse(Call& call, const absl::Status& why, bool identified) {
  v1::AuditEntry e;
  if (identified) {
    e.set_actor(call.who.org.str());
    e.set_actor_role(std::string(RoleName(call.who.role)));
  }
  e.add_reasons(ReasonOf(why));
  e.set_detail(absl::StrCat("MESH request refused: ", why.message()));
  d_.audit.RecordRefusal(std::move(e));
  call.Fail(403, "AUTH", "403", why);
}

void MeshService::Finished() {
  absl::MutexLock l(&mu_);
  --in_flight_;
}

bool MeshService::Drain(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  draining_ = true;
  return mu_.AwaitWithTimeout(absl::Condition(+[](int* n) { return *n == 0; }, &in_flight_), timeout);
}

void MeshService::Route(std::shared_ptr<Call> call) {
  const HttpRequest& r = call->req;
  const absl::string_view accept = r.Header("accept");
  if (absl::StrContains(accept, "application/vnd.mesh.v2+json")) {
    call->version = Version::kV2;
  } else if (absl::StrContains(accept, "vnd.mesh.") && !absl::StrContains(accept, "application/vnd.mesh.v1+json")) {
    return call->Fail(400, "REQUEST", "06",
                      InvalidArgument(reason::kMeshRequestInvalid,
                                      "Accept names a MESH API version carebroker does not serve (v1 or v2)"));
  }
  absl::string_view target = r.target;
  absl::string_view query;
  if (auto q = target.find('?'); q != absl::string_view::npos) {
    query = target.substr(q + 1);
    target = target.substr(0, q);
  }
  for (absl::string_view part : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    call->query[PercentDecode(kv.first, true)] = PercentDecode(kv.second, true);
  }
  std::vector<std::string> segments;
  for (absl::string_view s : absl::StrSplit(target, '/', absl::SkipEmpty())) segments.push_back(PercentDecode(s, false));
  if (segments.empty() || segments[0] != "messageexchange") {
    return call->Fail(404, "REQUEST", "20", absl::NotFoundError("not a MESH path: /messageexchange/..."));
  }
  call->path.assign(segments.begin() + 1, segments.end());
  if (call->path.size() == 1 && call->path[0] == "_ping") {
    return call->Answer(JsonResponse(200, Json::object()));
  }
  if (call->path.empty()) {
    return call->Fail(404, "REQUEST", "20", absl::NotFoundError("a MESH path names a mailbox: /messageexchange/{mailbox}"));
  }

  auto who = d_.identities.Get(r.peer_certificate_pem);
  if (!who.ok()) return Refuse(*call, who.status(), false);
  call->who = *who;
  auto refuse = [this, &call](const absl::Status& s) { Refuse(*call, s, true); };
  // The exchange is for agencies, as on the gRPC listener (an IG officer's
  // or an operator's certificate sends and receives nothing).
  if (call->who.role != Role::kAgency) {
    return refuse(Error(absl::StatusCode::kPermissionDenied, reason::kRoleNotAllowed,
                        absl::StrCat("the MESH API needs the agency role; this certificate's is ", RoleName(call->who.role))));
  }

  // The mailbox the token must prove: the path's, or for the lookups (whose
  // paths name none) the token's own.
  const std::string& first = call->path[0];
  std::string mailbox_id = first;
  const absl::string_view authorization = r.Header("authorization");
  if (first == "endpointlookup" || first == "workflowsearch") {
    auto token = ParseToken(authorization);
    if (!token.ok()) return refuse(token.status());
    mailbox_id = token->mailbox;
  }
  const Config& config = call->config();
  const v1::MeshMailbox* mb = config.FindMeshMailbox(mailbox_id);
  if (mb == nullptr) {
    return refuse(Error(absl::StatusCode::kPermissionDenied, reason::kMeshMailboxUnknown,
                        "the mailbox is not registered with this broker (mesh.mailboxes)"));
  }
  if (mb->organisation() != call->who.org.str()) {
    return refuse(Error(absl::StatusCode::kPermissionDenied, reason::kMeshMailboxNotYours,
                        absl::StrCat("mailbox ", mb->id(), " belongs to another organisation than the client certificate's")));
  }
  const std::string* password = config.MeshPassword(mb->id());
  auto accepted = CheckToken(authorization, mb->id(), config.mesh_shared_secret(), password ? *password : "", call->now);
  if (!accepted.ok()) return refuse(accepted.status());
  call->mailbox = mb;
  d_.store.UseOnce(accepted->key, accepted->forget_at, [this, call](absl::StatusOr<bool> first_use) mutable {
    if (!first_use.ok()) return call->Fail(503, "AUTH", "503", first_use.status());
    if (!*first_use) return Refuse(*call, TokenReused(), true);
    Authorised(std::move(call));
  });
}

void MeshService::Authorised(std::shared_ptr<Call> call) {
  const std::vector<std::string>& p = call->path;
  const std::string& m = call->req.method;
  const size_t n = p.size();
  auto is = [&](size_t i, absl::string_view s) { return n > i && p[i] == s; };
  if (is(0, "endpointlookup") && n == 3 && m == "GET") return EndpointLookup(call, p[1], p[2]);
  if (is(0, "workflowsearch") && n == 2 && m == "GET") return WorkflowSearch(call, p[1]);
  if (n == 1 && (m == "POST" || m == "GET")) return Handshake(call);
  if (n == 2 && is(1, "inbox") && m == "GET") return ListInbox(call, false);
  if (n == 2 && is(1, "count") && m == "GET") return ListInbox(call, true);
  if (n == 3 && is(1, "inbox") && (m == "GET" || m == "HEAD")) return Download(call, p[2], 1, m == "HEAD");
  if (n == 4 && is(1, "inbox") && m == "GET") {
    int chunk = 0;
    if (!absl::SimpleAtoi(p[3], &chunk) || chunk < 1) {
      return call->Fail(417, "RECEIVE", "20", InvalidArgument(reason::kMeshRequestInvalid, "a chunk number is 1 or more"));
    }
    return Download(call, p[2], chunk, false);
  }
  if (n == 5 && is(1, "inbox") && is(3, "status") && is(4, "acknowledged") && m == "PUT") return Acknowledge(call, p[2]);
  if (n == 2 && is(1, "outbox") && m == "POST") return Send(call);
  if (n == 3 && is(1, "outbox") && is(2, "tracking") && m == "GET") return Track(call);
  if (n == 4 && is(1, "outbox") && is(2, "tracking") && m == "GET") {
    return call->Fail(400, "TRACK", "06",
                      InvalidArgument(reason::kMeshRequestInvalid,
                                      "tracking by local id is deprecated in MESH and not served: use "
                                      "/outbox/tracking?messageID="));
  }
  if (n == 4 && is(1, "outbox") && m == "POST") return UploadChunk(call, p[2], p[3]);
  call->Fail(404, "REQUEST", "20", absl::NotFoundError(absl::StrCat("no MESH operation is ", m, " on this path")));
}

void MeshService::Handshake(std::shared_ptr<Call> call) {
  Json body = call->version == Version::kV2 ? Json{{"mailbox_id", call->mailbox->id()}}
                                            : Json{{"mailboxId", call->mailbox->id()}};
  call->Answer(JsonResponse(200, body));
}

void MeshService::ListInbox(std::shared_ptr<Call> call, bool count_only) {
  int max = 500;
  int64_t after = 0;
  if (!count_only) {
    if (auto it = call->query.find("max_results"); it != call->query.end()) {
      if (!absl::SimpleAtoi(it->second, &max) || max < 10 || max > 5000) {
        return call->Fail(400, "REQUEST", "06",
                          InvalidArgument(reason::kMeshRequestInvalid, "max_results is 10 to 5000"));
      }
    }
    if (auto it = call->query.find("continue_from"); it != call->query.end()) {
      absl::string_view c = it->second;
      if (!absl::ConsumePrefix(&c, kContinuePrefix) || !absl::SimpleHexAtoi(c, &after) || after < 0) {
        return call->Fail(400, "REQUEST", "06",
                          InvalidArgument(reason::kMeshRequestInvalid, "continue_from is not one this broker gave"));
      }
    }
  }
  auto filter = ParseWorkflowFilter(call->query.count("workflow_filter") ? call->query["workflow_filter"] : "");
  if (!filter.ok()) return call->Fail(400, "REQUEST", "06", filter.status());

  // Pages from the store until this mailbox's page is full or the inbox is
  // read (a mailbox sharing its organisation's inbox skips the others').
  struct Listing {
    std::vector<std::string> ids;
    uint64_t matched = 0;
    uint64_t total = 0;
    int64_t last_seq = 0;  // of the last id listed
    int rounds = 0;
    bool more = false;
  };
  auto listing = std::make_shared<Listing>();
  listing->last_seq = after;
  auto round = std::make_shared<std::function<void(int64_t)>>();
  *round = [this, call, listing, round, max, count_only, filter = *filter](int64_t from) {
    d_.store.Inbox(InboxQuery{call->who.org, from, kInboxStorePage, call->now},
                   [call, listing, round, max, count_only, filter](absl::StatusOr<InboxPage> page) {
      if (!page.ok()) {
        *round = nullptr;
        return call->Fail(503, "RECEIVE", "503", page.status());
      }
      const Config& config = call->config();
      listing->total = page->total;
      int64_t last_examined = 0;
      for (const InboxEntry& e : page->entries) {
        last_examined = e.seq;
        const Json meta = ParseMeta(e.meta);
        if (!InMailbox(config, *call->mailbox, e.workflow, meta)) continue;
        if (!filter.Matches(MeshWorkflowOf(config, e.workflow, meta))) continue;
        ++listing->matched;
        if (count_only) continue;
        if (listing->ids.size() == static_cast<size_t>(max)) {
          listing->more = true;
          break;
        }
        listing->ids.push_back(e.id.str());
        listing->last_seq = e.seq;
      }
      const bool store_has_more = page->entries.size() == static_cast<size_t>(kInboxStorePage);
      const bool full = !count_only && listing->ids.size() == static_cast<size_t>(max);
      if (!listing->more && !full && store_has_more && ++listing->rounds < kInboxStoreRounds) {
        return (*round)(last_examined);
      }
      if (full && store_has_more) listing->more = true;
      *round = nullptr;  // breaks the cycle
      if (count_only) {
        return call->Answer(JsonResponse(200, Json{{"count", listing->matched}}));
      }
      Json body{{"messages", listing->ids}};
      if (call->version == Version::kV2) {
        const std::string self = absl::StrCat("/messageexchange/", call->mailbox->id(), "/inbox?max_results=", max);
        Json links{{"self", self}};
        if (listing->more) {
          links["next"] = absl::StrCat(self, "&continue_from=", kContinuePrefix, absl::Hex(listing->last_seq, absl::kZeroPad16));
        }
        body["links"] = links;
        body["approx_inbox_count"] = listing->total;
      }
      call->Answer(JsonResponse(200, body));
    });
  };
  (*round)(after);
}

void MeshService::Download(std::shared_ptr<Call> call, const std::string& id, int chunk, bool head) {
  // A look first (HEAD's answer): is it this mailbox's, and can it go?
  d_.store.Fetch(FetchRequest{call->who.org, MessageId(id), call->now, false, false},
                 [this, call, id, chunk, head](absl::StatusOr<Fetched> look) {
    if (!look.ok()) {
      if (look.status().code() == absl::StatusCode::kNotFound) {
        return call->Fail(404, "RECEIVE", "20", look.status(), id);
      }
      return call->Fail(503, "RECEIVE", "503", look.status(), id);
    }
    const Config& config = call->config();
    const Json meta = ParseMeta(look->delivery.meta);
    if (!InMailbox(config, *call->mailbox, look->delivery.workflow, meta)) {
      return call->Fail(404, "RECEIVE", "20",
                        Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in this mailbox"),
                        id);
    }
    const uint32_t total = look->delivery.chunks;
    if (static_cast<uint32_t>(chunk) > total) {
      return call->Fail(404, "RECEIVE", "20",
                        Error(absl::StatusCode::kNotFound, reason::kMessageNotFound,
                              absl::StrCat("the message has ", total, total == 1 ? " chunk" : " chunks")),
                        id);
    }
    if (!mailbox::Fetchable(look->status)) {
      return call->Fail(410, "RECEIVE", "20",
                        Error(absl::StatusCode::kNotFound, reason::kMessageNotFound,
                              absl::StrCat("Gone: the message is ", mailbox::StatusWord(look->status))),
                        id);
    }
    // The first chunk of several is 206, as is every chunk but the last. A
    // chunk of more than one stored piece is sent as its pieces are read.
    auto respond = [this, call, id, chunk, total](StoredDelivery d, bool more) {
      const Config& cfg = call->config();
      const Json m = ParseMeta(d.meta);
      HttpResponse r;
      r.status = static_cast<uint32_t>(chunk) < total ? 206 : 200;
      r.content_type = d.content_type.empty() ? "application/octet-stream" : d.content_type;
      auto add = [&](absl::string_view name, std::string value) {
        if (!value.empty()) r.headers.emplace_back(std::string(name), std::move(value));
      };
      add("mex-messageid", id);
      add("mex-to", MetaValue(m, "mex-to").empty() ? call->mailbox->id() : MetaValue(m, "mex-to"));
      add("mex-version", "1.0");
      add("mex-addresstype", "ALL");
      add("mex-total-chunks", absl::StrCat(total));
      add("mex-chunk-range", absl::StrCat(chunk, ":", total));
      add("etag", id);
      add("last-modified", absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT", d.accepted_at, absl::UTCTimeZone()));
      if (d.kind == v1::MESSAGE_KIND_NON_DELIVERY_REPORT) {
        v1::NonDeliveryReport ndr;
        ndr.ParseFromString(d.payload);
        add("mex-messagetype", "REPORT");
        add("mex-linkedmsgid", ndr.message_id());
        add("mex-localid", ndr.local_reference());
        add("mex-workflowid", MeshWorkflowOf(cfg, ndr.workflow(), Json::object()));
        add("mex-statuscode", "14");
        add("mex-statusevent", "SEND");
        add("mex-statussuccess", "ERROR");
        add("mex-statusdescription",
            ndr.reason() == reason::kNotAcknowledgedBeforeExpiry
                ? std::string("Message not collected by recipient before it expired")
            : !ndr.rejection_code().empty()  // the code only: the text is the recipient's, not a header's
                ? absl::StrCat("Message rejected by recipient: ", ndr.rejection_code())
                : absl::StrCat("Message not delivered: ", ndr.reason()));
        add("mex-statustimestamp", MeshTime(FromMicros(Micros(ndr.expired_at()))));
        add("carebroker-reason", ndr.reason());
        r.body.clear();
        r.content_type = "application/octet-stream";
        return call->Answer(std::move(r));
      }
      add("mex-messagetype", "DATA");
      std::string from = MetaValue(m, "mex-from");
      if (from.empty()) from = FirstMailboxOf(cfg, d.sender);
      add("mex-from", from.empty() ? d.sender.str() : from);
      add("mex-workflowid", MeshWorkflowOf(cfg, d.workflow, m));
      for (absl::string_view h : kPassThrough) {
        if (h == "mex-localid" || h == "mex-content-type") continue;
        add(h, MetaValue(m, h));
      }
      add("mex-localid", d.local_reference);
      add("mex-content-type", r.content_type);
      add("mex-statuscode", "00");
      add("mex-statusevent", "TRANSFER");
      add("mex-statusdescription", "Transferred to recipient mailbox");
      add("mex-statussuccess", "SUCCESS");
      add("mex-statustimestamp", MeshTime(d.accepted_at));
      add("carebroker-sender", d.sender.str());
      if (more) {
        r.pieces = ChunkPieces(call, MessageId(id), static_cast<uint32_t>(chunk), std::move(d.payload));
      } else {
        r.body = std::move(d.payload);
      }
      call->Answer(std::move(r));
    };
    const bool report = look->delivery.kind == v1::MESSAGE_KIND_NON_DELIVERY_REPORT;
    if (head && !report) return respond(look->delivery, false);
    // A download counts and audits a delivery at its first chunk; a HEAD of
    // a report reads the (small) report to describe it.
    const bool first = chunk == 1 && !head;
    d_.store.Fetch(FetchRequest{call->who.org, MessageId(id), call->now, first, true, static_cast<uint32_t>(chunk),
                                total > 1 ? 0 : -1, call->config().proto().delivery().max_attempts()},
                   [this, call, id, respond, first](absl::StatusOr<Fetched> got) {
      if (!got.ok()) return call->Fail(503, "RECEIVE", "503", got.status(), id);
      if (!mailbox::Fetchable(got->status)) {
        return call->Fail(410, "RECEIVE", "20",
                          Error(absl::StatusCode::kNotFound, reason::kMessageNotFound,
                                absl::StrCat("Gone: the message is no longer in the inbox (",
                                             mailbox::StatusWord(got->status), ")")),
                          id);
      }
      StoredDelivery& d = got->delivery;
      if (!first) return respond(std::move(d), got->more);
      // The consent re-check at delivery, as a Receive stream makes it.
      const absl::string_view reason = d_.policy.CheckAtDelivery(d, call->who.org);
      if (reason.empty()) return respond(std::move(d), got->more);
      WithholdAtDelivery(d_.store, d_.metrics, d, call->who.org, reason, call->now,
                         [call, id, why = std::string(reason)](absl::StatusOr<int> r) {
        if (!r.ok()) return call->Fail(503, "RECEIVE", "503", r.status(), id);
        call->Fail(410, "RECEIVE", "20",
                   Error(absl::StatusCode::kNotFound, why,
                         "Gone: withheld at delivery because the person's recorded wishes changed"),
                   id);
      });
    });
  });
}

std::function<void(http::PieceSink)> MeshService::ChunkPieces(std::shared_ptr<Call> call, MessageId id,
                                                              uint32_t chunk, std::string first) {
  // The call stays in flight (Drain waits) until the last piece is given.
  struct Source {
    std::shared_ptr<Call> call;
    MessageId id;
    uint32_t chunk;
    std::string first;
    int next = 0;  // the piece to give next; piece 0 is in hand
    bool more = true;
  };
  auto src = std::make_shared<Source>(Source{std::move(call), std::move(id), chunk, std::move(first)});
  return [this, src](http::PieceSink sink) {
    if (src->next == 0) {
      src->next = 1;
      return sink(std::move(src->first));
    }
    if (!src->more) return sink(std::string());
    d_.store.Fetch(FetchRequest{src->call->who.org, src->id, src->call->now, false, true, src->chunk, src->next++},
                   [src, sink = std::move(sink)](absl::StatusOr<Fetched> got) {
                     if (!got.ok()) return sink(got.status());
                     if (!mailbox::Fetchable(got->status)) {
                       return sink(Error(absl::StatusCode::kNotFound, reason::kMessageNotFound,
                                         "the message left the mailbox during the download"));
                     }
                     src->more = got->more;
                     sink(std::move(got->delivery.payload));
                   });
  };
}

void MeshService::Acknowledge(std::shared_ptr<Call> call, const std::string& id) {
  d_.store.Fetch(FetchRequest{call->who.org, MessageId(id), call->now, false, false},
                 [this, call, id](absl::StatusOr<Fetched> look) {
    if (!look.ok()) {
      const int status = look.status().code() == absl::StatusCode::kNotFound ? 404 : 503;
      return call->Fail(status, "ACK", status == 404 ? "20" : "503", look.status(), id);
    }
    if (!InMailbox(call->config(), *call->mailbox, look->delivery.workflow, ParseMeta(look->delivery.meta))) {
      return call->Fail(404, "ACK", "20",
                        Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in this mailbox"),
                        id);
    }
    d_.store.Ack(call->who.org, {MessageId(id)}, call->now,
                 [this, call, id, workflow = look->delivery.workflow, was = look->status](absl::StatusOr<AckResult> r) {
      if (!r.ok()) return call->Fail(503, "ACK", "503", r.status(), id);
      if (!r->expired.empty()) {
        return call->Fail(410, "ACK", "14",
                          Error(absl::StatusCode::kNotFound, reason::kNotAcknowledgedBeforeExpiry,
                                "Gone: the message expired before it was acknowledged"),
                          id);
      }
      if (r->acknowledged.empty()) {
        return call->Fail(404, "ACK", "20",
                          Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in this mailbox"),
                          id);
      }
      if (mailbox::Fetchable(was)) d_.metrics.acknowledged.With({workflow}).Inc();
      call->Answer(call->version == Version::kV2 ? HttpResponse{200, "application/json", "", {}}
                                                 : JsonResponse(200, Json{{"messageId", id}}));
    });
  });
}

void MeshService::Send(std::shared_ptr<Call> call) {
  const HttpRequest& r = call->req;
  const Config& config = call->config();
  // A send refused here, before the pipeline, is recorded as the pipeline
  // records its refusals (SEND_REFUSED), naming what was already found.
  const v1::MeshMailbox* recipient = nullptr;
  const v1::MeshWorkflow* workflow = nullptr;
  auto refuse = [&](int status, absl::string_view event, absl::string_view code, const absl::Status& why) {
    d_.sends.RecordRefusal(call->who.org,
                           {recipient != nullptr ? recipient->organisation() : "",
                            workflow != nullptr ? workflow->workflow() : "",
                            workflow != nullptr ? workflow->purpose() : ""},
                           why);
    call->Fail(status, event, code, why);
  };
  if (r.body.empty()) {
    return refuse(417, "COLLECT", "02", InvalidArgument(reason::kPayloadEmpty, "the message body is empty"));
  }
  if (auto s = CheckSendHeaders(r.headers); !s.ok()) return refuse(417, "TRANSFER", "06", s);
  const std::string to = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(r.Header("mex-to")));
  if (to.empty()) {
    return refuse(417, "SEND", "08", InvalidArgument(reason::kRecipientInvalid, "mex-to is required"));
  }
  recipient = config.FindMeshMailbox(to);
  if (recipient == nullptr) {
    return refuse(417, "SEND", "12",
                Error(absl::StatusCode::kFailedPrecondition, reason::kMeshMailboxUnknown,
                      "mex-to names no mailbox registered with this broker"));
  }
  const std::string workflow_id(absl::StripAsciiWhitespace(r.Header("mex-workflowid")));
  if (workflow_id.empty()) {
    return refuse(417, "SEND", "06", InvalidArgument(reason::kWorkflowInvalid, "mex-workflowid is required"));
  }
  workflow = config.FindMeshWorkflow(workflow_id);
  if (workflow == nullptr) {
    return refuse(417, "SEND", "17",
                Error(absl::StatusCode::kPermissionDenied, reason::kMeshWorkflowUnknown,
                      "the workflow id is not registered with this broker (mesh.workflows)"));
  }
  uint32_t chunks = 1;
  if (const absl::string_view range = r.Header("mex-chunk-range"); !range.empty()) {
    auto parsed = ParseChunkRange(range);
    if (!parsed.ok() || parsed->first != 1) {
      return refuse(417, "SEND", "06",
                  InvalidArgument(reason::kChunkRangeInvalid, "mex-chunk-range on a send is 1:N (N chunks, 1 to 10000)"));
    }
    chunks = parsed->second;
  }
  std::string content_type(r.Header("mex-content-type"));
  if (content_type.empty()) content_type = std::string(r.Header("content-type"));
  if (content_type.empty()) content_type = "application/octet-stream";
  // A whole message is bounded by limits.max_message_bytes, a chunk by the
  // request limit (MESH's 100 MB), decompressed.
  const uint64_t limit =
      chunks > 1 ? config.proto().mesh().max_request_bytes() : config.proto().limits().max_message_bytes();
  auto payload = Body(call->req, limit);
  if (!payload.ok()) return refuse(417, "SEND", "06", payload.status());
  Json meta{{"mex-from", call->mailbox->id()}, {"mex-to", recipient->id()}, {"mex-workflowid", workflow_id}};
  for (absl::string_view h : kPassThrough) {
    if (absl::string_view v = r.Header(h); !v.empty()) meta[std::string(h)] = std::string(v);
  }
  v1::SendRequest req;
  req.set_recipient(recipient->organisation());
  req.set_workflow(workflow->workflow());
  req.set_purpose(workflow->purpose());
  req.set_content_type(content_type);
  req.set_local_reference(std::string(r.Header("mex-localid")));
  req.set_payload(*std::move(payload));
  d_.sends.Send(
      call->who.org, std::move(req),
      [call](absl::StatusOr<v1::SendReceipt> receipt) {
        if (receipt.ok()) {
          Json body = call->version == Version::kV2 ? Json{{"message_id", receipt->message_id()}}
                                                    : Json{{"messageID", receipt->message_id()}};
          return call->Answer(JsonResponse(202, body));
        }
        const absl::Status& s = receipt.status();
        switch (s.code()) {
          case absl::StatusCode::kPermissionDenied: return call->Fail(417, "SEND", "16", s);
          case absl::StatusCode::kFailedPrecondition: return call->Fail(417, "SEND", "12", s);
          case absl::StatusCode::kInvalidArgument: return call->Fail(417, "SEND", "06", s);
          case absl::StatusCode::kResourceExhausted:
            if (ReasonOf(s) == reason::kMessageTooLarge) return call->Fail(417, "SEND", "06", s);
            return call->Fail(429, "SEND", "429", s);
          case absl::StatusCode::kUnavailable: return call->Fail(503, "SEND", "503", s);
          default: return call->Fail(500, "SEND", "500", s);
        }
      },
      nullptr, SendOptions{meta.dump(), chunks, chunks > 1 ? limit : 0});
}

void MeshService::UploadChunk(std::shared_ptr<Call> call, const std::string& id, const std::string& number) {
  const HttpRequest& r = call->req;
  uint32_t n = 0;
  auto range = ParseChunkRange(r.Header("mex-chunk-range"));
  if (!absl::SimpleAtoi(number, &n) || !range.ok() || range->first != n || n < 2) {
    return call->Fail(417, "SEND", "06",
                      InvalidArgument(reason::kChunkRangeInvalid,
                                      "a chunk is posted to /outbox/{message_id}/{n} with mex-chunk-range n:N, n 2 or more"),
                      id);
  }
  if (r.body.empty()) {
    return call->Fail(417, "COLLECT", "02", InvalidArgument(reason::kPayloadEmpty, "the chunk is empty"), id);
  }
  auto data = Body(call->req, call->config().proto().mesh().max_request_bytes());
  if (!data.ok()) return call->Fail(417, "SEND", "06", data.status(), id);
  d_.sends.SendChunk(ChunkUpload{call->who.org, MessageId(id), n, range->second, *std::move(data), call->now},
                     [call, id, n](absl::StatusOr<ChunkStored> stored) {
    if (!stored.ok()) {
      const absl::Status& s = stored.status();
      switch (s.code()) {
        case absl::StatusCode::kNotFound: return call->Fail(404, "SEND", "20", s, id);
        case absl::StatusCode::kPermissionDenied: return call->Fail(417, "SEND", "16", s, id);
        case absl::StatusCode::kResourceExhausted: return call->Fail(429, "SEND", "429", s, id);
        case absl::StatusCode::kFailedPrecondition: return call->Fail(423, "SEND", "06", s, id);
        case absl::StatusCode::kInvalidArgument: return call->Fail(417, "SEND", "06", s, id);
        default: return call->Fail(503, "SEND", "503", s, id);
      }
    }
    Json body = call->version == Version::kV2 ? Json{{"message_id", id}} : Json{{"messageID", id}, {"blockID", n}};
    call->Answer(JsonResponse(202, body));
  });
}

void MeshService::Track(std::shared_ptr<Call> call) {
  auto it = call->query.find("messageID");
  if (it == call->query.end() || it->second.empty()) {
    return call->Fail(400, "TRACK", "06", InvalidArgument(reason::kMessageIdInvalid, "messageID is required"));
  }
  const std::string id = it->second;
  d_.store.Track(call->who.org, MessageId(id), [call, id](absl::StatusOr<TrackInfo> t) {
    if (!t.ok() || t->sender != call->who.org) {
      if (t.ok() || t.status().code() == absl::StatusCode::kNotFound) {
        return call->Fail(404, "TRACK", "20",
                          Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no message you sent has this id"),
                          id);
      }
      return call->Fail(503, "TRACK", "503", t.status(), id);
    }
    const Config& config = call->config();
    std::string status = "accepted", code = "00", event = "TRANSFER", success = "SUCCESS",
                description = "Transferred to recipient mailbox";
    absl::Time at = t->accepted_at;
    switch (t->status) {
      case v1::MESSAGE_STATUS_ACKNOWLEDGED:
        status = "acknowledged";
        event = "ACKNOWLEDGED";
        description = "Message acknowledged by recipient";
        at = t->acknowledged_at.value_or(at);
        break;
      case v1::MESSAGE_STATUS_EXPIRED:
        status = "undeliverable";
        code = "14";
        event = "SEND";
        success = "ERROR";
        description = "Message not collected by recipient before it expired";
        at = t->expired_at.value_or(at);
        break;
      case v1::MESSAGE_STATUS_UPLOADING:
        status = "uploading";
        event = "UPLOAD";
        description = "Chunks are still being uploaded";
        break;
      case v1::MESSAGE_STATUS_WITHHELD:
        status = "undeliverable";
        code = "14";
        event = "SEND";
        success = "ERROR";
        description = absl::StrCat("Message withheld at delivery: ", t->withheld_reason);
        at = t->withheld_at.value_or(at);
        break;
      case v1::MESSAGE_STATUS_HELD:
        status = "undeliverable";
        code = "14";
        event = "SEND";
        success = "ERROR";
        description = t->rejection_code.empty()
                          ? absl::StrCat("Message held: ", t->held_reason)
                          : absl::StrCat("Message rejected by recipient: ", t->rejection_code,
                                         t->rejection_text.empty() ? "" : " ", t->rejection_text);
        at = t->held_at.value_or(at);
        break;
      default: break;
    }
    const v1::Organisation* org = config.FindOrganisation(t->recipient);
    std::string recipient_mailbox = FirstMailboxOf(config, t->recipient);
    const std::string mesh_workflow = MeshWorkflowOf(config, t->workflow, Json::object());
    Json body;
    if (call->version == Version::kV2) {
      body = {{"message_id", id},
              {"local_id", t->local_reference},
              {"workflow_id", mesh_workflow},
              {"upload_timestamp", IsoTime(t->accepted_at)},
              {"expiry_time", IsoTime(t->expires_at)},
              {"recipient", recipient_mailbox},
              {"recipient_name", org ? org->name() : ""},
              {"recipient_ods_code", t->recipient.str()},
              {"recipient_org_code", t->recipient.str()},
              {"recipient_org_name", org ? org->name() : ""},
              {"status", status},
              {"status_code", code},
              {"status_event", event},
              {"status_success", success},
              {"status_description", description},
              {"status_timestamp", IsoTime(at)},
              {"carebroker_status", v1::MessageStatus_Name(t->status)},
              {"delivery_count", t->delivery_count}};
      if (!t->withheld_reason.empty()) body["carebroker_reason"] = t->withheld_reason;
      if (!t->held_reason.empty()) body["carebroker_reason"] = t->held_reason;
      if (!t->rejection_code.empty()) {
        body["carebroker_rejection_code"] = t->rejection_code;
        body["carebroker_rejection_text"] = t->rejection_text;
      }
      // An operator's redirect or resend (the caller is the sender of both).
      if (!t->replaced_by.empty()) body["carebroker_replaced_by"] = t->replaced_by.str();
      if (!t->replaces.empty()) body["carebroker_replaces"] = t->replaces.str();
    } else {
      body = {{"messageID", id},
              {"localID", t->local_reference},
              {"workflowID", mesh_workflow},
              {"uploadTimestamp", MeshTime(t->accepted_at)},
              {"expiryTime", MeshTime(t->expires_at)},
              {"recipient", recipient_mailbox},
              {"recipientOrgCode", t->recipient.str()},
              {"recipientOrgName", org ? org->name() : ""},
              {"status", status},
              {"statusCode", code},
              {"statusEvent", event},
              {"statusSuccess", success},
              {"statusDescription", description},
              {"statusTimestamp", MeshTime(at)}};
      if (t->acknowledged_at) body["downloadTimestamp"] = MeshTime(*t->acknowledged_at);
    }
    call->Answer(JsonResponse(200, body));
  });
}

void MeshService::EndpointLookup(std::shared_ptr<Call> call, const std::string& ods, const std::string& workflow) {
  Json results = Json::array();
  const Config& config = call->config();
  if (config.FindMeshWorkflow(workflow) != nullptr) {
    for (const auto& mb : config.proto().mesh().mailboxes()) {
      if (mb.organisation() != ods || !Receives(mb, workflow)) continue;
      if (call->version == Version::kV2) {
        results.push_back({{"mailbox_id", mb.id()}, {"mailbox_name", mb.name()}});
      } else {
        results.push_back({{"address", mb.id()}, {"description", mb.name()}, {"endpoint_type", "MESH"}});
      }
    }
  }
  Json body{{"results", results}};
  if (call->version == Version::kV1) body["query_id"] = call->internal_id;
  call->Answer(JsonResponse(200, body));
}

void MeshService::WorkflowSearch(std::shared_ptr<Call> call, const std::string& workflow) {
  Json results = Json::array();
  const Config& config = call->config();
  if (config.FindMeshWorkflow(workflow) != nullptr) {
    for (const auto& mb : config.proto().mesh().mailboxes()) {
      if (Receives(mb, workflow)) results.push_back({{"mailbox_id", mb.id()}, {"mailbox_name", mb.name()}});
    }
  }
  call->Answer(JsonResponse(200, Json{{"results", results}}));
}

}  // namespace carebroker::mesh
