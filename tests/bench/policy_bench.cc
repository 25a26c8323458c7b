// The decision and minimisation of one send, as intake makes them, and the
// consent re-check at delivery: with 50 agreements in force (the shipped 5
// and 45 more between other organisations, loaded from YAML by the real
// loader) and 100,000 people with recorded wishes (consents, dissents
// scoped and unscoped, national opt-outs). The record is the HL7 v2
// discharge fixture (adapters/testdata/hl7v2/adt_a03.hl7) parsed into the
// canonical record. Each iteration decides for the next of the 100,000
// people, so lookups miss the cache as they would in service. Prints
// Google Benchmark figures and the consent book's memory per person.
//
//   CB_SOURCE_DIR=. build/tests/bench/policy_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "adapters/common/testdata.h"
#include "adapters/formats.h"
#include "core/time.h"
#include "policy/agreements.h"
#include "policy/consent.h"
#include "policy/engine.h"
#include "tests/testutil/testutil.h"

namespace carebroker::policy {
namespace {

constexpr int kPeople = 100'000;
constexpr int kExtraAgreements = 45;

// Agreement i: trust R<i> sends two workflows to council L<i> and the GP
// practice G<i> for direct care, and a planning return to NHS England.
std::string ExtraAgreement(int i) {
  const std::string fields =
      "      - person.nhs_number\n      - person.names\n      - person.birth_date\n      - person.sex\n"
      "      - person.address\n      - events.reference\n      - events.occurred_at\n      - events.discharge\n";
  return absl::StrCat(
      "id: DSA-BENCH-", i, "\ntitle: bench ", i, "\nversion: \"1.0\"\nvalid_from: 2026-01-01\nvalid_until: 2030-01-01\n",
      "controllers: [R", 100 + i, "]\nretention: bench\nflows:\n",
      "  - name: notices\n    data_subjects: bench\n    senders: {ods: [R", 100 + i, "]}\n",
      "    recipients: {ods: [L", 100 + i, ", G", 10000 + i, "]}\n",
      "    workflows: [BENCH_A_", i, ", BENCH_B_", i, "]\n    purposes: [direct-care]\n",
      "    legal_basis: {article6: public-task, article9: health-or-social-care, common_law: implied-consent}\n",
      "    consent: ", i % 3 == 0 ? "explicit" : "implied", "\n    fields:\n", fields,
      "    transforms:\n      - {field: person.birth_date, generalise: year}\n",
      "  - name: planning\n    data_subjects: bench\n    senders: {ods: [R", 100 + i, "]}\n",
      "    recipients: {kinds: [nhs_england]}\n    workflows: [BENCH_RETURN_", i, "]\n    purposes: [planning]\n",
      "    legal_basis: {article6: public-task, article9: health-or-social-care, common_law: statutory-gateway,\n",
      "                  statutory: NHS Act 2006 s251 (bench)}\n",
      "    consent: implied\n    national_opt_out: applies\n    opt_out_basis: s251 support (bench)\n",
      "    fields:\n", fields);
}

// Resident memory in bytes (/proc/self/statm).
size_t Rss() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return static_cast<size_t>(resident) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

struct World {
  std::shared_ptr<const PolicySet> policy;
  ConsentBook book;
  std::vector<std::string> people;  // NHS numbers, every one with wishes recorded
  v1::CareRecord record;
  double book_bytes_per_person = 0;
  size_t agreements = 0;
};

World& TheWorld() {
  static World* world = [] {
    auto* w = new World;
    const std::filesystem::path dir = testing::TempDir("policy-bench");
    for (const auto& f : std::filesystem::directory_iterator(testing::SourcePath("deploy/agreements"))) {
      if (f.path().extension() == ".yaml") std::filesystem::copy_file(f.path(), dir / f.path().filename());
    }
    for (int i = 0; i < kExtraAgreements; ++i) std::ofstream(dir / absl::StrCat("bench-", i, ".yaml")) << ExtraAgreement(i);
    auto p = PolicySet::Load(dir.string());
    if (!p.ok()) {
      std::fprintf(stderr, "policy_bench: %s\n", std::string(p.status().message()).c_str());
      std::exit(1);
    }
    w->policy = *p;
    w->agreements = w->policy->agreements().agreements.size();
    w->record = *adapters::Parse(adapters::Format::kHl7v2, adapters::Testdata("hl7v2/adt_a03.hl7"));

    // Wishes: every person a consent for direct care; every third a dissent
    // (for research, or for direct care by another council); every seventh
    // a dissent for direct care by anyone (their sends are denied); every
    // tenth opted out.
    const size_t before = Rss();
    const absl::Time at = absl::FromUnixSeconds(1'790'000'000);
    for (int i = 0; i < kPeople; ++i) {
      const std::string nhs = testing::SyntheticNhsNumber(i);
      w->people.push_back(nhs);
      auto directive = [&](v1::DirectiveKind kind, v1::Purpose purpose, const char* scope_ods) {
        v1::ConsentChange c;
        c.set_nhs_number(nhs);
        *c.mutable_at() = ToTimestamp(at);
        c.set_by_org("Y06601");
        v1::Directive* d = c.mutable_recorded();
        d->set_id(absl::StrCat("d", i, "-", kind, "-", purpose));
        d->set_nhs_number(nhs);
        d->set_kind(kind);
        d->set_purpose(purpose);
        if (scope_ods != nullptr) d->mutable_scope()->set_ods(scope_ods);
        d->set_recorded_by_org("Y06601");
        *d->mutable_recorded_at() = ToTimestamp(at);
        if (!w->book.Apply(c).ok()) std::abort();
      };
      directive(v1::DIRECTIVE_KIND_CONSENT, v1::PURPOSE_DIRECT_CARE, nullptr);
      if (i % 3 == 1) directive(v1::DIRECTIVE_KIND_DISSENT, v1::PURPOSE_RESEARCH, nullptr);
      if (i % 3 == 2) directive(v1::DIRECTIVE_KIND_DISSENT, v1::PURPOSE_DIRECT_CARE, "511");
      if (i % 7 == 0) directive(v1::DIRECTIVE_KIND_DISSENT, v1::PURPOSE_DIRECT_CARE, nullptr);
      if (i % 10 == 0) {
        v1::ConsentChange c;
        c.set_nhs_number(nhs);
        *c.mutable_at() = ToTimestamp(at);
        c.set_national_opt_out(true);
        if (!w->book.Apply(c).ok()) std::abort();
      }
    }
    w->book_bytes_per_person = static_cast<double>(Rss() - before) / kPeople;
    return w;
  }();
  return *world;
}

// The hospital discharge to the council under the shipped agreement.
DecisionInput Discharge() {
  DecisionInput in;
  in.sender = {OrgCode("RR8"), v1::ORGANISATION_KIND_NHS_TRUST};
  in.recipient = {OrgCode("503"), v1::ORGANISATION_KIND_LOCAL_AUTHORITY};
  in.workflow = "HOSPITAL_DISCHARGE";
  in.purpose = v1::PURPOSE_DIRECT_CARE;
  in.now = absl::FromUnixSeconds(1'795'000'000);
  return in;
}

void Counters(benchmark::State& state) {
  const World& w = TheWorld();
  state.counters["agreements"] = static_cast<double>(w.agreements);
  state.counters["people"] = kPeople;
  state.counters["book_bytes_per_person"] = w.book_bytes_per_person;
}

// As intake decides: the person's wishes looked up under every key the
// record gives (its NHS number and local identifiers), then the decision.
Decision DecideFor(const World& w, const std::string& nhs, DecisionInput& in) {
  const std::vector<std::string> keys = PersonKeys(nhs, w.record.person().local_identifiers());
  std::optional<PersonConsent> person = w.book.FindAll(keys);
  in.consent = person ? &*person : nullptr;
  Decision d = w.policy->Decide(in);
  in.consent = nullptr;
  return d;
}

void BM_Decide(benchmark::State& state) {
  World& w = TheWorld();
  DecisionInput in = Discharge();
  size_t i = 0, allowed = 0;
  for (auto _ : state) {
    const Decision d = DecideFor(w, w.people[i++ % w.people.size()], in);
    allowed += d.allowed;
    benchmark::DoNotOptimize(d);
  }
  state.counters["allowed_share"] = static_cast<double>(allowed) / static_cast<double>(state.iterations());
  Counters(state);
}
BENCHMARK(BM_Decide);

// As intake does for an allowed send: decide, copy the parsed record, and
// minimise it by the flow (fields released, transforms), listing the paths
// released for the audit entry.
void BM_DecideAndMinimise(benchmark::State& state) {
  World& w = TheWorld();
  DecisionInput in = Discharge();
  size_t i = 0;
  for (auto _ : state) {
    const Decision d = DecideFor(w, w.people[i++ % w.people.size()], in);
    if (!d.allowed) continue;
    v1::CareRecord record = w.record;
    std::vector<std::string> withheld = d.flow->minimiser.Apply(&record, "");
    std::vector<std::string> released = PresentPaths(record);
    benchmark::DoNotOptimize(withheld);
    benchmark::DoNotOptimize(released);
  }
  Counters(state);
}
BENCHMARK(BM_DecideAndMinimise);

// The copy of the parsed record BM_DecideAndMinimise makes each time
// (intake minimises the record it parsed, without a copy): subtract it.
void BM_CopyRecord(benchmark::State& state) {
  World& w = TheWorld();
  for (auto _ : state) {
    v1::CareRecord record = w.record;
    benchmark::DoNotOptimize(record);
  }
  state.counters["record_bytes"] = static_cast<double>(w.record.ByteSizeLong());
}
BENCHMARK(BM_CopyRecord);

// A request no agreement covers (the deny by default): the index misses.
void BM_DecideNoAgreement(benchmark::State& state) {
  World& w = TheWorld();
  DecisionInput in = Discharge();
  in.recipient = {OrgCode("Y06601"), v1::ORGANISATION_KIND_GP_PRACTICE};
  in.purpose = v1::PURPOSE_RESEARCH;
  size_t i = 0;
  for (auto _ : state) {
    const std::string& nhs = w.people[i++ % w.people.size()];
    std::optional<PersonConsent> person = w.book.Find(nhs);
    in.consent = person ? &*person : nullptr;
    const Decision d = w.policy->Decide(in);
    benchmark::DoNotOptimize(d);
  }
  Counters(state);
}
BENCHMARK(BM_DecideNoAgreement);

// The delivery re-check of a stored message: the person's wishes now, under
// the rule packed at intake.
void BM_DeliveryRecheck(benchmark::State& state) {
  World& w = TheWorld();
  const uint32_t check = EncodeConsentCheck(v1::CONSENT_MODEL_IMPLIED, false, false);
  const OrgCode council("503");
  size_t i = 0, withheld = 0;
  for (auto _ : state) {
    const std::string& nhs = w.people[i++ % w.people.size()];
    std::optional<PersonConsent> person = w.book.Find(nhs);
    const absl::string_view why = RecheckConsent(check, v1::PURPOSE_DIRECT_CARE, council,
                                                 v1::ORGANISATION_KIND_LOCAL_AUTHORITY, person ? &*person : nullptr);
    withheld += !why.empty();
    benchmark::DoNotOptimize(why);
  }
  state.counters["withheld_share"] = static_cast<double>(withheld) / static_cast<double>(state.iterations());
  Counters(state);
}
BENCHMARK(BM_DeliveryRecheck);

}  // namespace
}  // namespace carebroker::policy

BENCHMARK_MAIN();
