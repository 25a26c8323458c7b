// The SQLite store's operations: their SQL inside a batch transaction
// (sqlite_store_impl.h), following mailbox_rules.h.
#include "broker/store/sqlite_store_impl.h"
#include "core/ids.h"

namespace carebroker::sqlite_impl {

absl::StatusOr<std::vector<AuditRow>> SqliteStore::DoReadAudit(const AuditRead& req) {
  const uint64_t end = synced_audit_size_.load(std::memory_order_acquire);
  const uint64_t from = std::min<uint64_t>(req.from, end);
  std::vector<AuditRow> out;
  if (req.hashes_only || req.subject.empty()) {
    if (auto s = ReadRange(req.hashes_only ? audit_read_hashes_ : audit_read_, from, end, req, out); !s.ok()) {
      return s;
    }
    return out;
  }
  // By subject: scan only the blocks whose filter may hold it, then the
  // block being filled (and any block without a filter) whole.
  blocks_read_.Bind(1, static_cast<int64_t>(from / kAuditBlockEntries))
      .Bind(2, static_cast<int64_t>(end / kAuditBlockEntries));
  ResetOnExit reset{blocks_read_};
  const SubjectBloom::Probe probe(req.subject);
  uint64_t cursor = from;
  while (out.size() < static_cast<size_t>(req.max)) {
    auto row = blocks_read_.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    const uint64_t first = static_cast<uint64_t>(blocks_read_.Int(0)) * kAuditBlockEntries;
    const uint64_t last = first + kAuditBlockEntries;
    if (cursor < first) {  // blocks without a filter
      if (auto s = ReadRange(audit_read_subject_, cursor, first, req, out); !s.ok()) return s;
    }
    cursor = std::max(cursor, first);
    if (probe.MayBeIn(blocks_read_.View(1))) {
      if (auto s = ReadRange(audit_read_subject_, cursor, last, req, out); !s.ok()) return s;
    }
    cursor = last;
  }
  if (auto s = ReadRange(audit_read_subject_, cursor, end, req, out); !s.ok()) return s;
  return out;
}

absl::Status SqliteStore::ReadRange(Stmt& q, uint64_t first, uint64_t last, const AuditRead& req,
                                    std::vector<AuditRow>& out) {
  if (first >= last || out.size() >= static_cast<size_t>(req.max)) return absl::OkStatus();
  q.Bind(1, static_cast<int64_t>(first)).Bind(2, static_cast<int64_t>(last));
  q.Bind(3, static_cast<int64_t>(req.max - out.size()));
  if (&q == &audit_read_subject_) q.Bind(4, req.subject);
  ResetOnExit reset{q};
  while (true) {
    auto row = q.Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
    AuditRow& r = out.emplace_back();
    r.index = static_cast<uint64_t>(q.Int(0));
    r.entry = q.Text(1);
    r.leaf_hash = q.Text(2);
  }
}

absl::StatusOr<std::vector<v1::SignedTreeHead>> SqliteStore::DoReadTreeHeads() {
  ResetOnExit reset{heads_read_};
  std::vector<v1::SignedTreeHead> out;
  while (true) {
    auto row = heads_read_.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    if (!out.emplace_back().ParseFromString(heads_read_.Text(0))) {
      return Error(absl::StatusCode::kDataLoss, reason::kStoreCorrupt, "a stored tree head cannot be read");
    }
  }
  return out;
}

absl::Status SqliteStore::WriteAudit(const AuditRecord& r) {
  if (r.empty()) return absl::OkStatus();
  const std::string entry = IndexedAuditEntry(next_audit_index_, r.entry);
  const audit::Hash leaf = audit::LeafHash(entry);
  audit_insert_.Bind(1, static_cast<int64_t>(next_audit_index_)).Bind(2, Micros(r.at));
  if (r.subject.empty()) {
    audit_insert_.BindNull(3);
  } else {
    audit_insert_.Bind(3, r.subject);
  }
  audit_insert_.BindBlob(4, entry).BindBlob(5, audit::AsBytes(leaf));
  if (auto s = audit_insert_.Exec(); !s.ok()) return s;
  if (!r.subject.empty()) pending_bloom_.Add(r.subject);
  if (++next_audit_index_ % kAuditBlockEntries == 0) {
    if (pending_bloom_valid_) {
      block_insert_.Bind(1, static_cast<int64_t>(next_audit_index_ / kAuditBlockEntries - 1))
          .BindBlob(2, pending_bloom_.bytes());
      if (auto s = block_insert_.Exec(); !s.ok()) return s;
    }
    pending_bloom_.Clear();
    pending_bloom_valid_ = true;
  }
  batch_leaves_.emplace_back(audit::AsBytes(leaf));
  return absl::OkStatus();
}

absl::Status SqliteStore::RecordEvent(const MessageEvent& e) {
  return recorder_ == nullptr ? absl::OkStatus() : WriteAudit(recorder_->Record(e));
}

absl::Status SqliteStore::RebuildPendingBloom() {
  Stmt subjects;
  if (auto s = subjects.Prepare(db_, sqlite::kSubjectsInRange); !s.ok()) return s;
  auto bloom =
      sqlite::SubjectFilter(subjects, next_audit_index_ - next_audit_index_ % kAuditBlockEntries, next_audit_index_);
  if (!bloom.ok()) return bloom.status();
  pending_bloom_ = *bloom;
  return absl::OkStatus();
}

absl::Status SqliteStore::PrepareAll() {
  struct {
    Stmt* s;
    const char* sql;
  } all[] = {
      {&find_idem_, "SELECT id, accepted_at, digest FROM messages WHERE sender = ?1 AND idem_key = ?2"},
      {&forget_key_, "UPDATE messages SET idem_key = NULL WHERE sender = ?1 AND idem_key = ?2"},
      {&insert_msg_,
       "INSERT INTO messages (id, sender, recipient, workflow, purpose, idem_key, content_type, "
       "local_ref, kind, digest, state, accepted_at, expires_at, visible_at, claim_token, deliveries, "
       "first_delivered_at, subject, consent_check, meta, chunks, pending_audit, progress) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?19, ?11, ?12, ?11, NULL, 0, NULL, ?15, ?16, ?17, ?18, ?20, "
       "?21)"},
      {&insert_claimed_,
       "INSERT INTO messages (id, sender, recipient, workflow, purpose, idem_key, content_type, "
       "local_ref, kind, digest, state, accepted_at, expires_at, visible_at, claim_token, deliveries, "
       "first_delivered_at, subject, consent_check, meta) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 2, ?11, ?12, ?13, ?14, 1, ?11, ?15, ?16, ?17)"},
      {&insert_body_, "INSERT INTO bodies (seq, body) VALUES (?1, ?2)"},
      {&claim_select_,
       "SELECT seq, id, sender, workflow, purpose, content_type, local_ref, kind, accepted_at, deliveries, "
       "subject, consent_check, chunks, expires_at, deliveries - attempt_base FROM messages WHERE recipient = ?1 AND "
       "state < 3 AND "
       "visible_at <= ?2 AND "
       "expires_at > ?2 AND seq <= ?4 AND (chunks = 1 OR ?5) AND (?6 = '' OR instr(?6, ',' || workflow || ',') > 0) "
       "ORDER BY visible_at, seq LIMIT ?3"},
      {&claim_update_,
       "UPDATE messages SET state = 2, visible_at = ?2, claim_token = ?3, deliveries = deliveries + 1, "
       "first_delivered_at = coalesce(first_delivered_at, ?4) WHERE seq = ?1"},
      {&select_body_, "SELECT body FROM bodies WHERE seq = ?1"},
      {&insert_chunk_, "INSERT INTO chunks (seq, n, part, body) VALUES (?1, ?2, ?3, ?4)"},
      {&replace_chunk_, "DELETE FROM chunks WHERE seq = ?1 AND n = ?2"},
      {&select_chunk_, "SELECT body FROM chunks WHERE seq = ?1 AND n = ?2 ORDER BY part"},
      {&select_piece_,
       "SELECT body, EXISTS (SELECT 1 FROM chunks WHERE seq = ?1 AND n = ?2 AND part = ?3 + 1) FROM chunks "
       "WHERE seq = ?1 AND n = ?2 AND part = ?3"},
      {&chunk_size_, "SELECT coalesce(sum(length(body)), 0) FROM chunks WHERE seq = ?1 AND n = ?2"},
      {&delete_chunks_, "DELETE FROM chunks WHERE seq = ?1"},
      {&chunk_state_,
       "SELECT seq, state, chunks, pending_audit, (SELECT coalesce(max(n), 0) FROM chunks c WHERE c.seq = m.seq), "
       "recipient, progress FROM messages m WHERE id = ?1 AND sender = ?2"},
      {&progress_update_, "UPDATE messages SET progress = ?2 WHERE seq = ?1"},
      {&chunk_complete_,
       "UPDATE messages SET state = 1, visible_at = ?2, pending_audit = NULL, progress = NULL WHERE seq = ?1"},
      {&abandon_select_, "SELECT seq FROM messages WHERE state = 6 AND expires_at <= ?1 LIMIT ?2"},
      {&abandon_update_,
       "UPDATE messages SET state = 4, expired_at = ?2, purged = 1, pending_audit = NULL, progress = NULL "
       "WHERE seq = ?1"},
      {&ack_update_, "UPDATE messages SET state = 3, acked_at = ?2, claim_token = NULL, subject = NULL WHERE seq = ?1"},
      {&ack_state_,
       "SELECT seq, state, sender, workflow, purpose, subject, kind FROM messages WHERE id = ?1 AND recipient = ?2"},
      {&release_,
       "UPDATE messages SET visible_at = ?4, claim_token = NULL "
       "WHERE id = ?1 AND recipient = ?2 AND claim_token = ?3 AND state < 3"},
      {&hide_,
       "UPDATE messages SET visible_at = max(visible_at, ?3) "
       "WHERE id = ?1 AND recipient = ?2 AND claim_token IS NOT NULL AND state < 3"},
      {&track_,
       "SELECT id, sender, recipient, workflow, local_ref, state, accepted_at, first_delivered_at, "
       "acked_at, expired_at, expires_at, deliveries, purged, withheld_at, withheld_reason, held_at, held_reason, "
       "reject_code, reject_text, replaces, replaced_by FROM messages "
       "WHERE id = ?1 AND (sender = ?2 OR recipient = ?2)"},
      {&inbox_page_,
       "SELECT seq, id, workflow, meta FROM messages WHERE recipient = ?1 AND state < 3 AND expires_at > ?2 AND seq > ?3 "
       "AND seq <= ?5 ORDER BY seq LIMIT ?4"},
      {&inbox_count_,
       "SELECT count(*) FROM messages WHERE recipient = ?1 AND state < 3 AND expires_at > ?2 AND seq <= ?3"},
      {&fetch_select_,
       "SELECT seq, id, sender, workflow, purpose, content_type, local_ref, kind, accepted_at, deliveries, "
       "subject, consent_check, state, expires_at, meta, chunks, claim_token IS NOT NULL, visible_at, "
       "deliveries - attempt_base FROM messages "
       "WHERE id = ?1 AND recipient = ?2 AND seq <= ?3"},
      {&fetch_update_,
       "UPDATE messages SET state = 2, deliveries = deliveries + ?3, first_delivered_at = coalesce(first_delivered_at, "
       "?2) WHERE seq = ?1"},
      {&hold_update_,
       "UPDATE messages SET state = 7, held_at = ?2, held_reason = ?3, reject_code = ?4, reject_text = ?5, "
       "claim_token = NULL WHERE seq = ?1"},
      {&reject_select_,
       "SELECT seq, sender, workflow, purpose, subject, kind, local_ref, accepted_at, expires_at, state FROM messages "
       "WHERE id = ?1 AND recipient = ?2 AND seq <= ?3"},
      {&purge_held_select_,
       "SELECT seq FROM messages WHERE state = 7 AND purged = 0 AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2"},
      {&purge_expired_select_,
       "SELECT seq FROM messages WHERE state = 4 AND purged = 0 AND expired_at <= ?1 ORDER BY expired_at LIMIT ?2"},
      {&once_insert_, "INSERT INTO used_once (key, forget_at) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING"},
      {&once_forget_, "DELETE FROM used_once WHERE key IN (SELECT key FROM used_once WHERE forget_at <= ?1 LIMIT ?2)"},
      {&mailbox_stats_,
       "SELECT recipient, sum(depth), min(oldest), sum(held) FROM ("
       "SELECT recipient, count(*) AS depth, min(accepted_at) AS oldest, 0 AS held FROM messages WHERE state < 3 "
       "GROUP BY recipient UNION ALL "
       "SELECT recipient, 0, NULL, count(*) FROM messages WHERE state = 7 AND purged = 0 GROUP BY recipient) "
       "GROUP BY recipient ORDER BY recipient"},
      {&find_messages_,
       "SELECT seq, id, sender, recipient, workflow, local_ref, state, accepted_at, expires_at, deliveries, "
       "coalesce(held_reason, withheld_reason), reject_code, "
       "coalesce((SELECT length(body) FROM bodies b WHERE b.seq = m.seq), "
       "(SELECT sum(length(body)) FROM chunks c WHERE c.seq = m.seq), 0), replaced_by FROM messages m "
       "WHERE seq > ?1 AND seq <= ?2 AND (?3 = '' OR sender = ?3) AND (?4 = '' OR recipient = ?4) "
       "AND (?5 = '' OR workflow = ?5) AND (?6 = 0 OR state = ?6) AND accepted_at >= ?7 AND accepted_at < ?8 "
       "AND (?9 = '' OR local_ref = ?9) ORDER BY seq LIMIT ?10"},
      {&action_select_,
       "SELECT seq, sender, workflow, purpose, subject, kind, local_ref, accepted_at, recipient, state, purged, "
       "expires_at, replaced_by, chunks, content_type, meta FROM messages WHERE id = ?1"},
      {&replaced_update_,
       "UPDATE messages SET replaced_by = ?2, purged = 1, subject = NULL, claim_token = NULL WHERE seq = ?1"},
      {&replaces_update_, "UPDATE messages SET replaces = ?2 WHERE seq = ?1"},
      {&copy_chunks_, "INSERT INTO chunks (seq, n, part, body) SELECT ?1, n, part, body FROM chunks WHERE seq = ?2 AND n >= 2"},
      {&release_update_,
       "UPDATE messages SET state = 1, visible_at = ?2, claim_token = NULL, attempt_base = deliveries, held_at = NULL, "
       "held_reason = NULL, reject_code = NULL, reject_text = NULL WHERE seq = ?1"},
      {&cancel_update_, "UPDATE messages SET state = 8, purged = 1, subject = NULL WHERE seq = ?1"},
      {&expire_select_,
       "SELECT seq, id, sender, recipient, workflow, local_ref, accepted_at, kind, purpose, subject FROM messages "
       "WHERE state < 3 AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2"},
      {&expire_update_,
       "UPDATE messages SET state = 4, expired_at = ?2, claim_token = NULL WHERE seq = ?1"},
      {&delete_body_, "DELETE FROM bodies WHERE seq = ?1"},
      {&purge_select_,
       "SELECT seq FROM messages WHERE state = 3 AND purged = 0 AND acked_at <= ?1 "
       "ORDER BY acked_at LIMIT ?2"},
      {&purge_update_, "UPDATE messages SET purged = 1, subject = NULL WHERE seq = ?1"},
      {&withhold_select_,
       "SELECT seq, sender, workflow, purpose, subject, kind, local_ref, accepted_at, expires_at FROM messages "
       "WHERE id = ?1 AND recipient = ?2 AND state < 3"},
      {&withhold_update_,
       "UPDATE messages SET state = 5, withheld_at = ?2, withheld_reason = ?3, claim_token = NULL, purged = 1, "
       "subject = NULL WHERE seq = ?1"},
      {&consent_insert_, "INSERT INTO consent (nhs_number, change) VALUES (?1, ?2)"},
      {&consent_person_, "SELECT seq, change FROM consent WHERE nhs_number = ?1 ORDER BY seq"},
      {&consent_all_, "SELECT seq, change FROM consent ORDER BY seq"},
      {&audit_insert_, "INSERT INTO audit (idx, at, subject, entry, leaf) VALUES (?1, ?2, ?3, ?4, ?5)"},
      {&block_insert_, "INSERT INTO audit_blocks (block, bloom) VALUES (?1, ?2)"},
      {&head_insert_, "INSERT OR IGNORE INTO tree_heads (tree_size, head) VALUES (?1, ?2)"},
  };
  for (auto& p : all) {
    if (auto s = p.s->Prepare(db_, p.sql); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteStore::Insert(const NewMessage& m) {
  if (m.chunks > 1 && m.claim_token != 0) {
    return InvalidArgument(reason::kChunkRangeInvalid, "a chunked message cannot be stored already claimed");
  }
  if (m.chunks <= 1) {
    if (auto s = WriteAudit(m.audit); !s.ok()) return s;
  }
  for (const AuditRecord& r : m.row_audit) {
    if (auto s = WriteAudit(r); !s.ok()) return s;
  }
  Stmt& ins = m.claim_token != 0 ? insert_claimed_ : insert_msg_;
  ins.Bind(1, m.id.str()).Bind(2, m.sender.str()).Bind(3, m.recipient.str());
  ins.Bind(4, m.workflow).Bind(5, m.purpose);
  if (m.idempotency_key.empty()) {
    ins.BindNull(6);
  } else {
    ins.Bind(6, m.idempotency_key);
  }
  ins.Bind(7, m.content_type).Bind(8, m.local_reference).Bind(9, int64_t{m.kind});
  ins.BindBlob(10, m.digest).Bind(11, Micros(m.accepted_at)).Bind(12, Micros(m.expires_at));
  if (m.claim_token != 0) ins.Bind(13, Micros(m.visible_until)).Bind(14, static_cast<int64_t>(m.claim_token));
  const std::string subject = mailbox::PackSubject(m.subject, m.consent_keys);  // bound, not copied
  if (subject.empty()) {
    ins.BindNull(15);
  } else {
    ins.Bind(15, subject);
  }
  ins.Bind(16, int64_t{m.consent_check});
  if (m.meta.empty()) {
    ins.BindNull(17);
  } else {
    ins.BindBlob(17, m.meta);
  }
  const std::string pending = m.chunks > 1 ? mailbox::PackPendingAudit(m.audit) : "";  // bound, not copied
  if (m.claim_token == 0) {
    ins.Bind(18, int64_t{m.chunks}).Bind(19, int64_t{mailbox::InitialState(m)});
    if (m.chunks > 1) {
      ins.BindBlob(20, pending);
    } else {
      ins.BindNull(20);
    }
    if (m.chunks > 1 && !m.progress.empty()) {
      ins.BindBlob(21, m.progress);
    } else {
      ins.BindNull(21);
    }
  }
  if (auto s = ins.Exec(); !s.ok()) return s;
  const int64_t seq = sqlite3_last_insert_rowid(db_);
  batch_max_seq_ = seq;
  if (m.chunks > 1) {  // the first chunk; the rest follow (DoAppendChunk)
    if (auto s = WriteChunk(seq, 1, m.payload); !s.ok()) return s;
    return seq;
  }
  if (auto s = insert_body_.Bind(1, seq).BindBlob(2, m.payload).Exec(); !s.ok()) return s;
  // A message stored already claimed needs no wake-up: its stream has it.
  if (m.claim_token == 0) arrivals_.insert(m.recipient);
  if (auto e = mailbox::StoredClaimedEvent(m)) {
    if (auto s = RecordEvent(*e); !s.ok()) return s;
  }
  return seq;
}

absl::StatusOr<std::vector<absl::StatusOr<AppendReceipt>>> SqliteStore::DoAppend(const std::vector<NewMessage>& msgs) {
  std::vector<absl::StatusOr<AppendReceipt>> out;
  out.reserve(msgs.size());
  for (const NewMessage& m : msgs) {
    if (!m.idempotency_key.empty()) {
      bool forget = false;
      {
        find_idem_.Bind(1, m.sender.str()).Bind(2, m.idempotency_key);
        ResetOnExit reset{find_idem_};
        auto row = find_idem_.Step();
        if (!row.ok()) return row.status();
        if (*row && !(forget = mailbox::KeyForgotten(FromMicros(find_idem_.Int(1)), m.key_since))) {
          out.push_back(mailbox::RepeatedKey(MessageId(find_idem_.Text(0)), FromMicros(find_idem_.Int(1)),
                                             find_idem_.Text(2), m));
          continue;
        }
      }
      if (forget) {  // past the window: the first message keeps no key
        if (auto s = forget_key_.Bind(1, m.sender.str()).Bind(2, m.idempotency_key).Exec(); !s.ok()) return s;
      }
    }
    std::optional<mailbox::Original> original;
    if (m.replaces) {  // checked before anything is written
      auto o = SelectOriginal(m.replaces->id);
      if (!o.ok()) return o.status();
      if (absl::Status ok = o->Replaceable(); !ok.ok()) {
        out.push_back(ok);
        continue;
      }
      original = *std::move(o);
    }
    auto seq = Insert(m);
    if (!seq.ok()) return seq.status();
    if (original) {
      if (auto s = LinkReplacement(*original, m, *seq); !s.ok()) return s;
    }
    out.push_back(AppendReceipt{m.id, m.accepted_at, false, *seq});
  }
  return out;
}

StoredDelivery SqliteStore::DeliveryColumns(Stmt& q) {
  StoredDelivery d;
  d.seq = q.Int(0);
  d.id = MessageId(q.Text(1));
  d.sender = OrgCode(q.Text(2));
  d.workflow = q.Text(3);
  d.purpose = q.Text(4);
  d.content_type = q.Text(5);
  d.local_reference = q.Text(6);
  d.kind = static_cast<v1::MessageKind>(q.Int(7));
  d.accepted_at = FromMicros(q.Int(8));
  d.delivery_count = static_cast<uint32_t>(q.Int(9));
  if (!q.IsNull(10)) {
    d.subject = mailbox::SubjectOf(q.View(10));
    d.consent_keys = mailbox::ConsentKeysOf(q.View(10));
  }
  d.consent_check = static_cast<uint32_t>(q.Int(11));
  return d;
}

absl::Status SqliteStore::WriteChunk(int64_t seq, uint32_t n, absl::string_view data) {
  if (auto s = replace_chunk_.Bind(1, seq).Bind(2, int64_t{n}).Exec(); !s.ok()) return s;
  for (size_t part = 0; part < mailbox::PieceCount(data.size()); ++part) {
    insert_chunk_.Bind(1, seq).Bind(2, int64_t{n}).Bind(3, static_cast<int64_t>(part));
    if (auto s = insert_chunk_.BindBlob(4, mailbox::Piece(data, part)).Exec(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::ReadChunk(int64_t seq, uint32_t n, const std::function<void(absl::string_view)>& piece) {
  select_chunk_.Bind(1, seq).Bind(2, int64_t{n});
  ResetOnExit reset{select_chunk_};
  while (true) {
    auto row = select_chunk_.Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
    piece(select_chunk_.View(0));
  }
}

absl::Status SqliteStore::ReadBody(StoredDelivery& d, uint32_t chunk) {
  if (d.chunks > 1) {
    d.payload.clear();
    {
      // Sized first: growing a 100 MB string by doubling would hold two at once.
      chunk_size_.Bind(1, d.seq).Bind(2, int64_t{chunk});
      ResetOnExit reset{chunk_size_};
      auto row = chunk_size_.Step();
      if (!row.ok()) return row.status();
      if (*row) d.payload.reserve(static_cast<size_t>(chunk_size_.Int(0)));
    }
    return ReadChunk(d.seq, chunk, [&d](absl::string_view p) { d.payload.append(p.data(), p.size()); });
  }
  select_body_.Bind(1, d.seq);
  ResetOnExit reset{select_body_};
  auto row = select_body_.Step();
  if (!row.ok()) return row.status();
  if (*row) d.payload = select_body_.Text(0);
  return absl::OkStatus();
}

absl::Status SqliteStore::HandOver(StoredDelivery& d, const OrgCode& recipient, absl::Time now) {
  if (d.chunks <= 1) {  // a chunked message is fetched chunk by chunk
    if (auto s = ReadBody(d, 1); !s.ok()) return s;
  }
  if (auto e = mailbox::DeliveredEvent(d, recipient, now)) return RecordEvent(*e);
  return absl::OkStatus();
}

absl::Status SqliteStore::DeleteBody(int64_t seq) {
  if (auto s = delete_body_.Bind(1, seq).Exec(); !s.ok()) return s;
  return delete_chunks_.Bind(1, seq).Exec();
}

absl::StatusOr<ChunkProgress> SqliteStore::DoReadChunkProgress(const OrgCode& sender, const MessageId& id) {
  chunk_state_.Bind(1, id.str()).Bind(2, sender.str());
  ResetOnExit reset{chunk_state_};
  auto row = chunk_state_.Step();
  if (!row.ok()) return row.status();
  if (!*row) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no message you sent has this id");
  ChunkProgress out;
  out.received = static_cast<uint32_t>(chunk_state_.Int(4));
  if (!chunk_state_.IsNull(6)) out.progress = chunk_state_.Text(6);
  return out;
}

absl::StatusOr<ChunkStored> SqliteStore::DoAppendChunk(const ChunkUpload& c) {
  int64_t seq, state, chunks, received;
  std::string pending;
  bool stored_progress;
  OrgCode recipient;
  {
    chunk_state_.Bind(1, c.id.str()).Bind(2, c.sender.str());
    ResetOnExit reset{chunk_state_};
    auto row = chunk_state_.Step();
    if (!row.ok()) return row.status();
    if (!*row) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no message you sent has this id");
    seq = chunk_state_.Int(0);
    state = chunk_state_.Int(1);
    chunks = chunk_state_.Int(2);
    if (!chunk_state_.IsNull(3)) pending = chunk_state_.Text(3);
    received = chunk_state_.Int(4);
    recipient = OrgCode(chunk_state_.Text(5));
    stored_progress = !chunk_state_.IsNull(6);
  }
  if (auto s = mailbox::CheckChunk(state, chunks, received, static_cast<int>(c.n), static_cast<int>(c.total)); !s.ok()) {
    return s;
  }
  if (auto s = mailbox::CheckSubmissionChunk(stored_progress, !c.progress.empty(), received, c.after,
                                             static_cast<int>(c.n));
      !s.ok()) {
    return s;
  }
  if (auto s = WriteChunk(seq, c.n, c.data); !s.ok()) return s;
  for (const AuditRecord& r : c.row_audit) {
    if (auto s = WriteAudit(r); !s.ok()) return s;
  }
  ChunkStored out;
  if (c.n != c.total) {
    if (stored_progress) {
      if (auto s = progress_update_.Bind(1, seq).BindBlob(2, c.progress).Exec(); !s.ok()) return s;
    }
    return out;
  }
  if (auto s = CompleteUpload(seq, chunks, pending, c.audit_patch, recipient, c.now); !s.ok()) return s;
  out.complete = true;
  return out;
}

absl::Status SqliteStore::CompleteUpload(int64_t seq, int64_t chunks, const std::string& pending,
                                         const std::string& patch, const OrgCode& recipient, absl::Time now) {
  // The digest of the whole, a chunk at a time (a submission's is the one
  // of its chunks as sent, in its patch).
  Sha256Stream digest;
  for (int64_t n = 1; patch.empty() && n <= chunks; ++n) {
    if (auto s = ReadChunk(seq, static_cast<uint32_t>(n), [&digest](absl::string_view p) { digest.Update(p); });
        !s.ok()) {
      return s;
    }
  }
  const std::string whole = digest.Finish();
  auto entry = mailbox::CompletedAudit(pending, whole, now, patch);
  if (!entry.ok()) return entry.status();
  if (auto s = WriteAudit(*entry); !s.ok()) return s;
  if (auto s = chunk_complete_.Bind(1, seq).Bind(2, Micros(now)).Exec(); !s.ok()) return s;
  arrivals_.insert(recipient);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<StoredDelivery>> SqliteStore::DoClaim(const ClaimRequest& req) {
  struct Claimed {
    int64_t expires_micros;
    uint32_t attempts;  // deliveries since the last release (delivery.max_attempts)
    StoredDelivery d;
  };
  std::vector<Claimed> rows;
  {
    claim_select_.Bind(1, req.recipient.str()).Bind(2, Micros(req.now)).Bind(3, int64_t{req.max});
    claim_select_.Bind(4, synced_seq_.load(std::memory_order_acquire)).Bind(5, int64_t{req.chunked});
    claim_select_.Bind(6, req.workflows);
    ResetOnExit reset{claim_select_};
    while (true) {
      auto row = claim_select_.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      StoredDelivery d = DeliveryColumns(claim_select_);
      d.chunks = static_cast<uint32_t>(claim_select_.Int(12));
      rows.push_back({claim_select_.Int(13), static_cast<uint32_t>(claim_select_.Int(14)), std::move(d)});
    }
  }
  std::vector<StoredDelivery> out;
  out.reserve(rows.size());
  for (auto& [expires_micros, attempts, d] : rows) {
    const int64_t seq = d.seq;
    if (mailbox::Spent(attempts, req.max_attempts)) {
      auto s = HoldRow(seq, mailbox::RowOf(d, req.recipient), FromMicros(expires_micros), mailbox::MaxAttemptsHold(),
                       req.now);
      if (!s.ok()) return s;
      arrivals_.insert(req.recipient);  // what it held back a place from may be claimed now
      continue;
    }
    ++d.delivery_count;
    claim_update_.Bind(1, seq).Bind(2, Micros(req.visible_until));
    claim_update_.Bind(3, static_cast<int64_t>(req.token)).Bind(4, Micros(req.now));
    if (auto s = claim_update_.Exec(); !s.ok()) return s;
    if (auto s = HandOver(d, req.recipient, req.now); !s.ok()) return s;
    out.push_back(std::move(d));
  }
  return out;
}

absl::StatusOr<AckResult> SqliteStore::DoAck(const OrgCode& recipient, const std::vector<MessageId>& ids,
                                             absl::Time now) {
  AckResult r;
  for (const MessageId& id : ids) {
    int64_t seq, state;
    mailbox::Row m{.id = id, .recipient = recipient};
    {
      ack_state_.Bind(1, id.str()).Bind(2, recipient.str());
      ResetOnExit reset{ack_state_};
      auto row = ack_state_.Step();
      if (!row.ok()) return row.status();
      if (!*row) {
        r.not_found.push_back(id);
        continue;
      }
      seq = ack_state_.Int(0);
      state = ack_state_.Int(1);
      m.sender = OrgCode(ack_state_.Text(2));
      m.workflow = ack_state_.Text(3);
      m.purpose = ack_state_.Text(4);
      m.subject = mailbox::SubjectOf(ack_state_.View(5));
      m.kind = static_cast<v1::MessageKind>(ack_state_.Int(6));
    }
    const mailbox::AckOutcome outcome = mailbox::ClassifyAck(state);
    if (outcome == mailbox::AckOutcome::kAcknowledge) {
      if (auto s = ack_update_.Bind(1, seq).Bind(2, Micros(now)).Exec(); !s.ok()) return s;
      if (auto e = mailbox::AcknowledgedEvent(m, now)) {
        if (auto s = RecordEvent(*e); !s.ok()) return s;
      }
    }
    mailbox::Report(outcome, id, r);
  }
  return r;
}

absl::StatusOr<int> SqliteStore::DoRelease(const OrgCode& recipient, ClaimToken token,
                                           const std::vector<MessageId>& ids, absl::Time now) {
  int n = 0;
  for (const MessageId& id : ids) {
    release_.Bind(1, id.str()).Bind(2, recipient.str()).Bind(3, static_cast<int64_t>(token));
    release_.Bind(4, Micros(now));
    if (auto s = release_.Exec(); !s.ok()) return s;
    n += release_.Changes();
  }
  if (n > 0) arrivals_.insert(recipient);
  return n;
}

absl::StatusOr<std::vector<MailboxStat>> SqliteStore::DoMailboxStats() {
  ResetOnExit reset{mailbox_stats_};
  std::vector<MailboxStat> out;
  while (true) {
    auto row = mailbox_stats_.Step();
    if (!row.ok()) return row.status();
    if (!*row) return out;
    out.push_back(MailboxStat{OrgCode(mailbox_stats_.Text(0)), static_cast<uint64_t>(mailbox_stats_.Int(1)),
                              mailbox_stats_.IsNull(2) ? absl::InfinitePast() : FromMicros(mailbox_stats_.Int(2)),
                              static_cast<uint64_t>(mailbox_stats_.Int(3))});
  }
}

absl::StatusOr<InboxPage> SqliteStore::DoInbox(const InboxQuery& q) {
  // Only messages already on disk, as claims see them.
  const int64_t synced = synced_seq_.load(std::memory_order_acquire);
  InboxPage page;
  {
    inbox_page_.Bind(1, q.recipient.str()).Bind(2, Micros(q.now)).Bind(3, q.after_seq).Bind(4, int64_t{q.max});
    inbox_page_.Bind(5, synced);
    ResetOnExit reset{inbox_page_};
    while (true) {
      auto row = inbox_page_.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      page.entries.push_back(InboxEntry{MessageId(inbox_page_.Text(1)), inbox_page_.Text(2), inbox_page_.Int(0),
                                        inbox_page_.IsNull(3) ? std::string() : inbox_page_.Text(3)});
    }
  }
  inbox_count_.Bind(1, q.recipient.str()).Bind(2, Micros(q.now)).Bind(3, synced);
  ResetOnExit reset{inbox_count_};
  auto row = inbox_count_.Step();
  if (!row.ok()) return row.status();
  page.total = *row ? static_cast<uint64_t>(inbox_count_.Int(0)) : 0;
  return page;
}

absl::StatusOr<Fetched> SqliteStore::DoFetch(const FetchRequest& req) {
  Fetched f;
  StoredDelivery& d = f.delivery;
  int64_t state;
  bool counts;
  uint32_t attempts;
  absl::Time expires;
  {
    fetch_select_.Bind(1, req.id.str()).Bind(2, req.recipient.str());
    fetch_select_.Bind(3, synced_seq_.load(std::memory_order_acquire));
    ResetOnExit reset{fetch_select_};
    auto row = fetch_select_.Step();
    if (!row.ok()) return row.status();
    if (!*row) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in your mailbox");
    d = DeliveryColumns(fetch_select_);
    state = fetch_select_.Int(12);
    const absl::Time expires_at = FromMicros(fetch_select_.Int(13));
    if (!fetch_select_.IsNull(14)) d.meta = fetch_select_.Text(14);
    d.chunks = static_cast<uint32_t>(fetch_select_.Int(15));
    counts = mailbox::CountsAsDelivery(fetch_select_.Int(16) != 0, FromMicros(fetch_select_.Int(17)), req.now);
    attempts = static_cast<uint32_t>(fetch_select_.Int(18));
    f.status = mailbox::FetchStatus(state, expires_at, req.now);
    expires = expires_at;
  }
  if (!mailbox::Fetchable(f.status)) return f;
  if (req.body && (req.chunk < 1 || req.chunk > d.chunks)) {
    return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "the message has no such chunk");
  }
  if (req.deliver && counts && mailbox::Spent(attempts, req.max_attempts)) {
    auto s = HoldRow(d.seq, mailbox::RowOf(d, req.recipient), expires, mailbox::MaxAttemptsHold(), req.now);
    if (!s.ok()) return s;
    f.status = v1::MESSAGE_STATUS_HELD;
    return f;
  }
  if (req.deliver) {
    fetch_update_.Bind(1, d.seq).Bind(2, Micros(req.now)).Bind(3, int64_t{counts});
    if (auto s = fetch_update_.Exec(); !s.ok()) return s;
    if (counts) ++d.delivery_count;
    f.status = v1::MESSAGE_STATUS_DELIVERED;
    if (auto e = mailbox::DeliveredEvent(d, req.recipient, req.now)) {
      if (auto s = RecordEvent(*e); !s.ok()) return s;
    }
  }
  if (req.body && req.piece >= 0 && d.chunks > 1) {
    select_piece_.Bind(1, d.seq).Bind(2, int64_t{req.chunk}).Bind(3, int64_t{req.piece});
    ResetOnExit reset{select_piece_};
    auto row = select_piece_.Step();
    if (!row.ok()) return row.status();
    if (!*row) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "the chunk has no such piece");
    d.payload = select_piece_.Text(0);
    f.more = select_piece_.Int(1) != 0;
  } else if (req.body) {
    if (req.piece > 0) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "the message has one piece");
    if (auto s = ReadBody(d, req.chunk); !s.ok()) return s;
  }
  return f;
}

absl::StatusOr<bool> SqliteStore::DoUseOnce(const std::string& key, absl::Time forget_at) {
  if (auto s = once_insert_.BindBlob(1, key).Bind(2, Micros(forget_at)).Exec(); !s.ok()) return s;
  return once_insert_.Changes() == 1;
}

absl::StatusOr<TrackInfo> SqliteStore::DoTrack(const OrgCode& caller, const MessageId& id) {
  track_.Bind(1, id.str()).Bind(2, caller.str());
  ResetOnExit reset{track_};
  auto row = track_.Step();
  if (!row.ok()) return row.status();
  if (!*row) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in your mailboxes");
  TrackInfo t;
  t.id = MessageId(track_.Text(0));
  t.sender = OrgCode(track_.Text(1));
  t.recipient = OrgCode(track_.Text(2));
  t.workflow = track_.Text(3);
  t.local_reference = track_.Text(4);
  auto status = mailbox::StatusOf(track_.Int(5));
  if (!status.ok()) return status.status();
  t.status = *status;
  t.accepted_at = FromMicros(track_.Int(6));
  if (!track_.IsNull(7)) t.first_delivered_at = FromMicros(track_.Int(7));
  if (!track_.IsNull(8)) t.acknowledged_at = FromMicros(track_.Int(8));
  if (!track_.IsNull(9)) t.expired_at = FromMicros(track_.Int(9));
  t.expires_at = FromMicros(track_.Int(10));
  t.delivery_count = static_cast<uint32_t>(track_.Int(11));
  t.body_purged = track_.Int(12) != 0;
  if (!track_.IsNull(13)) t.withheld_at = FromMicros(track_.Int(13));
  if (!track_.IsNull(14)) t.withheld_reason = track_.Text(14);
  if (!track_.IsNull(15)) t.held_at = FromMicros(track_.Int(15));
  if (!track_.IsNull(16)) t.held_reason = track_.Text(16);
  if (!track_.IsNull(17)) t.rejection_code = track_.Text(17);
  if (!track_.IsNull(18)) t.rejection_text = track_.Text(18);
  if (!track_.IsNull(19)) t.replaces = MessageId(track_.Text(19));
  if (!track_.IsNull(20)) t.replaced_by = MessageId(track_.Text(20));
  return t;
}

namespace {
// Columns 1 to 7 of withhold_select_ and reject_select_: sender, workflow,
// purpose, subject, kind, local_ref, accepted_at.
void RowColumns(Stmt& q, mailbox::Row& m) {
  m.sender = OrgCode(q.Text(1));
  m.workflow = q.Text(2);
  m.purpose = q.Text(3);
  m.subject = mailbox::SubjectOf(q.View(4));
  m.consent_keys = mailbox::ConsentKeysOf(q.View(4));
  m.kind = static_cast<v1::MessageKind>(q.Int(5));
  m.local_reference = q.Text(6);
  m.accepted_at = FromMicros(q.Int(7));
}
}  // namespace

absl::StatusOr<int> SqliteStore::DoWithhold(const OrgCode& recipient, const std::vector<MessageId>& ids,
                                            const std::string& reason, absl::Time now) {
  int n = 0;
  for (const MessageId& id : ids) {
    int64_t seq;
    absl::Duration lifetime;
    mailbox::Row m{.id = id, .recipient = recipient};
    {
      withhold_select_.Bind(1, id.str()).Bind(2, recipient.str());
      ResetOnExit reset{withhold_select_};
      auto row = withhold_select_.Step();
      if (!row.ok()) return row.status();
      if (!*row) continue;
      seq = withhold_select_.Int(0);
      RowColumns(withhold_select_, m);
      lifetime = FromMicros(withhold_select_.Int(8)) - m.accepted_at;
    }
    if (auto s = RecordEvent(mailbox::WithheldEvent(m, reason, now)); !s.ok()) return s;
    if (auto s = withhold_update_.Bind(1, seq).Bind(2, Micros(now)).Bind(3, reason).Exec(); !s.ok()) return s;
    if (auto s = DeleteBody(seq); !s.ok()) return s;
    if (auto report = mailbox::WithheldReport(m, reason, now, lifetime)) {
      if (auto s = Insert(*report); !s.ok()) return s.status();
    }
    ++n;
  }
  return n;
}

absl::Status SqliteStore::HoldRow(int64_t seq, const mailbox::Row& m, absl::Time expires_at, const mailbox::Hold& h,
                                  absl::Time now) {
  if (auto s = RecordEvent(mailbox::HeldEvent(m, h, now)); !s.ok()) return s;
  hold_update_.Bind(1, seq).Bind(2, Micros(now)).Bind(3, h.reason);
  if (h.code.empty()) {
    hold_update_.BindNull(4).BindNull(5);
  } else {
    hold_update_.Bind(4, h.code).Bind(5, h.text);
  }
  if (auto s = hold_update_.Exec(); !s.ok()) return s;
  if (auto report = mailbox::HeldReport(m, h, now, expires_at - m.accepted_at)) {
    if (auto s = Insert(*report); !s.ok()) return s.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::MessageStatus> SqliteStore::DoReject(const Rejection& r) {
  int64_t seq, state;
  absl::Time expires_at;
  mailbox::Row m{.id = r.id, .recipient = r.recipient};
  {
    reject_select_.Bind(1, r.id.str()).Bind(2, r.recipient.str()).Bind(3, synced_seq_.load(std::memory_order_acquire));
    ResetOnExit reset{reject_select_};
    auto row = reject_select_.Step();
    if (!row.ok()) return row.status();
    if (!*row) return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in your mailbox");
    seq = reject_select_.Int(0);
    RowColumns(reject_select_, m);
    expires_at = FromMicros(reject_select_.Int(8));
    state = reject_select_.Int(9);
  }
  switch (mailbox::ClassifyReject(state, expires_at, r.now)) {
    case mailbox::RejectOutcome::kNotFound:
      return Error(absl::StatusCode::kNotFound, reason::kMessageNotFound, "no such message in your mailbox");
    case mailbox::RejectOutcome::kUnchanged: return mailbox::FetchStatus(state, expires_at, r.now);
    case mailbox::RejectOutcome::kHold: break;
  }
  if (auto s = HoldRow(seq, m, expires_at, mailbox::HoldFor(r), r.now); !s.ok()) return s;
  return v1::MESSAGE_STATUS_HELD;
}

absl::StatusOr<std::vector<MessageSummary>> SqliteStore::DoFindMessages(const MessageQuery& q) {
  Stmt& f = find_messages_;
  f.Bind(1, q.after_seq).Bind(2, synced_seq_.load(std::memory_order_acquire));
  f.Bind(3, q.sender.str()).Bind(4, q.recipient.str()).Bind(5, q.workflow).Bind(6, int64_t{mailbox::StateOf(q.status)});
  f.Bind(7, q.from == absl::InfinitePast() ? INT64_MIN : Micros(q.from));
  f.Bind(8, q.until == absl::InfiniteFuture() ? INT64_MAX : Micros(q.until));
  f.Bind(9, q.local_reference).Bind(10, int64_t{q.max});
  ResetOnExit reset{f};
  std::vector<MessageSummary> out;
  while (true) {
    auto row = f.Step();
    if (!row.ok()) return row.status();
    if (!*row) return out;
    auto status = mailbox::StatusOf(f.Int(6));
    if (!status.ok()) return status.status();
    MessageSummary& m = out.emplace_back();
    m.seq = f.Int(0);
    m.id = MessageId(f.Text(1));
    m.sender = OrgCode(f.Text(2));
    m.recipient = OrgCode(f.Text(3));
    m.workflow = f.Text(4);
    m.local_reference = f.Text(5);
    m.status = *status;
    m.accepted_at = FromMicros(f.Int(7));
    m.expires_at = FromMicros(f.Int(8));
    m.delivery_count = static_cast<uint32_t>(f.Int(9));
    if (!f.IsNull(10)) m.reason = f.Text(10);
    if (!f.IsNull(11)) m.rejection_code = f.Text(11);
    m.bytes = static_cast<uint64_t>(f.Int(12));
    if (!f.IsNull(13)) m.replaced_by = MessageId(f.Text(13));
  }
}

absl::StatusOr<mailbox::Original> SqliteStore::SelectOriginal(const MessageId& id) {
  Stmt& q = action_select_;
  q.Bind(1, id.str());
  ResetOnExit reset{q};
  auto row = q.Step();
  if (!row.ok()) return row.status();
  if (!*row) return mailbox::NoOriginal();
  mailbox::Original o;
  o.seq = q.Int(0);
  o.row.id = id;
  RowColumns(q, o.row);
  o.row.recipient = OrgCode(q.Text(8));
  o.state = q.Int(9);
  o.purged = q.Int(10) != 0;
  o.expires_at = FromMicros(q.Int(11));
  if (!q.IsNull(12)) o.replaced_by = q.Text(12);
  o.chunks = q.Int(13);
  o.content_type = q.Text(14);
  if (!q.IsNull(15)) o.meta = q.Text(15);
  return o;
}

absl::StatusOr<v1::MessageStatus> SqliteStore::DoActOn(const OperatorAction& a) {
  auto o = SelectOriginal(a.id);
  if (!o.ok()) return o.status();
  if (auto s = o->Actionable(a.now); !s.ok()) return s;
  if (auto s = RecordEvent(mailbox::ActionEvent(o->row, a)); !s.ok()) return s;
  if (a.kind == OperatorAction::kRelease) {
    if (auto s = release_update_.Bind(1, o->seq).Bind(2, Micros(a.now)).Exec(); !s.ok()) return s;
    arrivals_.insert(o->row.recipient);
  } else {
    if (auto s = cancel_update_.Bind(1, o->seq).Exec(); !s.ok()) return s;
    if (auto s = DeleteBody(o->seq); !s.ok()) return s;
  }
  return *mailbox::StatusOf(mailbox::AfterAction(a.kind));
}

absl::StatusOr<Undelivered> SqliteStore::DoReadUndelivered(const MessageId& id) {
  auto o = SelectOriginal(id);
  if (!o.ok()) return o.status();
  if (auto s = o->Replaceable(); !s.ok()) return s;
  if (o->chunks > 1) {
    std::string first;
    if (auto s = ReadChunk(o->seq, 1, [&first](absl::string_view p) { first.append(p.data(), p.size()); }); !s.ok()) {
      return s;
    }
    return o->ToUndelivered(std::move(first));
  }
  select_body_.Bind(1, o->seq);
  ResetOnExit reset{select_body_};
  auto row = select_body_.Step();
  if (!row.ok()) return row.status();
  return o->ToUndelivered(*row ? select_body_.Text(0) : "");
}

absl::Status SqliteStore::LinkReplacement(const mailbox::Original& o, const NewMessage& m, int64_t seq) {
  if (m.chunks > 1) {  // the original's other chunks, and the copy is complete
    if (auto s = copy_chunks_.Bind(1, seq).Bind(2, o.seq).Exec(); !s.ok()) return s;
    if (auto s = CompleteUpload(seq, m.chunks, mailbox::PackPendingAudit(m.audit), "", m.recipient, m.accepted_at);
        !s.ok()) {
      return s;
    }
  }
  if (auto s = replaced_update_.Bind(1, o.seq).Bind(2, m.id.str()).Exec(); !s.ok()) return s;
  if (auto s = DeleteBody(o.seq); !s.ok()) return s;
  if (auto s = replaces_update_.Bind(1, seq).Bind(2, o.row.id.str()).Exec(); !s.ok()) return s;
  return RecordEvent(mailbox::ActionEvent(o.row, *m.replaces, &m));
}

absl::StatusOr<v1::ConsentChange> SqliteStore::DoAppendConsent(v1::ConsentChange c) {
  c.clear_seq();
  if (auto s = consent_insert_.Bind(1, PersonKey(c.nhs_number(), c.local_identifier())).BindBlob(2, c.SerializeAsString()).Exec(); !s.ok()) {
    return s;
  }
  c.set_seq(sqlite3_last_insert_rowid(db_));
  batch_consent_.push_back(c);
  return c;
}

absl::StatusOr<std::vector<v1::ConsentChange>> SqliteStore::DoReadConsent(const std::string& nhs_number) {
  Stmt& q = nhs_number.empty() ? consent_all_ : consent_person_;
  if (!nhs_number.empty()) q.Bind(1, nhs_number);
  ResetOnExit reset{q};
  std::vector<v1::ConsentChange> out;
  while (true) {
    auto row = q.Step();
    if (!row.ok()) return row.status();
    if (!*row) break;
    v1::ConsentChange& c = out.emplace_back();
    if (!c.ParseFromString(q.Text(1))) {
      return Error(absl::StatusCode::kInternal, reason::kStoreCorrupt, "a stored consent change cannot be read");
    }
    c.set_seq(q.Int(0));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> SqliteStore::SweepSeqs(Stmt& q, absl::Time at, int max_items, bool& more) {
  std::vector<int64_t> seqs;
  {
    q.Bind(1, Micros(at)).Bind(2, int64_t{max_items} + 1);
    ResetOnExit reset{q};
    while (true) {
      auto row = q.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      seqs.push_back(q.Int(0));
    }
  }
  seqs.resize(mailbox::SweepBatch(static_cast<int>(seqs.size()), max_items, more));
  return seqs;
}

absl::StatusOr<SweepResult> SqliteStore::DoSweep(const SweepRequest& req) {
  SweepResult r;
  std::vector<std::pair<int64_t, mailbox::Row>> expired;
  {
    expire_select_.Bind(1, Micros(req.now)).Bind(2, int64_t{req.max_items} + 1);
    ResetOnExit reset{expire_select_};
    while (true) {
      auto row = expire_select_.Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      mailbox::Row e;
      e.id = MessageId(expire_select_.Text(1));
      e.sender = OrgCode(expire_select_.Text(2));
      e.recipient = OrgCode(expire_select_.Text(3));
      e.workflow = expire_select_.Text(4);
      e.local_reference = expire_select_.Text(5);
      e.accepted_at = FromMicros(expire_select_.Int(6));
      e.kind = static_cast<v1::MessageKind>(expire_select_.Int(7));
      e.purpose = expire_select_.Text(8);
      e.subject = mailbox::SubjectOf(expire_select_.View(9));
      expired.emplace_back(expire_select_.Int(0), std::move(e));
    }
  }
  expired.resize(mailbox::SweepBatch(static_cast<int>(expired.size()), req.max_items, r.more));
  for (const auto& [seq, e] : expired) {
    if (auto s = expire_update_.Bind(1, seq).Bind(2, Micros(req.now)).Exec(); !s.ok()) return s;
    ++r.expired;
    ++r.expired_by_workflow[e.workflow];
    mailbox::ExpiryPlan plan = mailbox::PlanExpiry(e, req);
    if (plan.event) {
      if (auto s = RecordEvent(*plan.event); !s.ok()) return s;
    }
    if (plan.report) {
      if (auto s = Insert(*plan.report); !s.ok()) return s.status();
      ++r.reports;
    }
  }
  // Bodies past retention: acknowledged, expired (kept for an operator's
  // resend) and held (kept for a release, and then for a resend).
  for (Stmt* q : {&purge_select_, &purge_expired_select_, &purge_held_select_}) {
    auto purge = SweepSeqs(*q, req.purge_before, req.max_items, r.more);
    if (!purge.ok()) return purge.status();
    for (int64_t seq : *purge) {
      if (auto s = purge_update_.Bind(1, seq).Exec(); !s.ok()) return s;
      if (auto s = DeleteBody(seq); !s.ok()) return s;
      ++r.purged;
    }
  }
  auto abandoned = SweepSeqs(abandon_select_, req.now, req.max_items, r.more);
  if (!abandoned.ok()) return abandoned.status();
  for (int64_t seq : *abandoned) {
    if (auto s = abandon_update_.Bind(1, seq).Bind(2, Micros(req.now)).Exec(); !s.ok()) return s;
    if (auto s = DeleteBody(seq); !s.ok()) return s;
    ++r.abandoned;
  }
  if (auto s = once_forget_.Bind(1, Micros(req.now)).Bind(2, int64_t{req.max_items}).Exec(); !s.ok()) return s;
  r.forgotten = once_forget_.Changes();
  return r;
}

}  // namespace carebroker::sqlite_impl
