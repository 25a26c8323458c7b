#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "policy/agreements.h"
#include "policy/cases.h"
#include "policy/consent.h"
#include "policy/engine.h"
#include "policy/minimise.h"

namespace carebroker::policy {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string SourceDir() {
  const char* s = std::getenv("CB_SOURCE_DIR");
  return s != nullptr ? s : ".";
}

absl::Time Day(const char* d) { return *ParseUkDate(d); }

std::vector<std::string> Lint(const std::string& yaml) {
  std::vector<LoadedAgreement> out;
  std::vector<std::string> errors;
  ParseAgreement(yaml, "a.yaml", &out, &errors);
  return errors;
}

// A minimal valid agreement; `flow_extra` is appended to its only flow.
std::string Agreement(const std::string& flow_extra = "", const std::string& fields = "[person.nhs_number, person.names]") {
  return absl::StrCat(R"(id: DSA-TEST
title: Test agreement
version: "1"
valid_from: 2026-01-01
valid_until: 2026-12-31
flows:
  - name: test-flow
    senders: {ods: [RR8]}
    recipients: {kinds: [local_authority]}
    workflows: [HOSPITAL_DISCHARGE]
    purposes: [direct-care]
    legal_basis: {article6: public-task, article9: health-or-social-care, common_law: implied-consent}
    consent: implied
    fields: )", fields, "\n", flow_extra);
}

// ------------------------------------------------------------ agreements

TEST(Agreements, DeployExamplesLoad) {
  auto set = LoadAgreements(SourceDir() + "/deploy/agreements");
  ASSERT_TRUE(set.ok()) << set.status();
  std::vector<std::string> ids;
  for (const auto& a : set->agreements) ids.push_back(a.agreement.id());
  EXPECT_THAT(ids, ElementsAre("DSA-ACUTE-TO-PRIMARY-CARE", "DSA-ACUTE-TO-SOCIAL-CARE", "DSA-ASC-CLD", "DSA-SAFEGUARDING-ADULTS",
                               "DSA-SOCIAL-CARE-TO-GP"));
  EXPECT_EQ(set->digest.size(), 64u);
}

TEST(Agreements, MinimalIsValid) { EXPECT_THAT(Lint(Agreement()), IsEmpty()); }

TEST(Agreements, EveryErrorHasFileLineAndKey) {
  auto errors = Lint(R"(id: bad id
title: T
version: "1"
valid_from: 2026-02-30
valid_until: 2026-12-31
flows:
  - name: f
    senders: {ods: [rr8]}
    recipients: {kinds: [local_authority]}
    workflows: [discharge]
    purposes: [direct-care]
    legal_basis: {article9: health-or-social-care, common_law: implied-consent}
    national_opt_out: applies
    consent: implied
    fields: [person.nhs_numbr]
)");
  EXPECT_THAT(errors, ElementsAre("a.yaml:1: id: required: upper-case letters, digits and '-', e.g. DSA-LEEDS-DISCHARGE",
                                  "a.yaml:4: valid_from: required: the first day in force, YYYY-MM-DD",
                                  "a.yaml:8: flows[0].senders.ods[0]: an ODS code is 3 to 10 upper-case letters or digits",
                                  "a.yaml:10: flows[0].workflows[0]: a workflow is upper snake case, e.g. HOSPITAL_DISCHARGE",
                                  "a.yaml:12: flows[0].legal_basis.article6: required: the UK GDPR Article 6 lawful basis",
                                  "a.yaml:13: flows[0].national_opt_out: the national data opt-out never applies to direct "
                                  "care or safeguarding",
                                  "a.yaml:15: flows[0].fields[0]: 'nhs_numbr' is not a field of carebroker.v1.Person"));
}

// The minimal agreement with purpose planning instead: the opt-out must be stated.
std::string Planning(const std::string& opt_out, const std::string& fields = "[person.nhs_number, person.names]",
                     const std::string& consent = "implied") {
  std::string yaml = absl::StrReplaceAll(Agreement(opt_out, fields), {{"purposes: [direct-care]", "purposes: [planning]"},
                                                                      {"consent: implied", "consent: " + consent}});
  return yaml;
}

TEST(Agreements, AFlowBeyondDirectCareStatesTheOptOutWithItsBasisOrExemption) {
  EXPECT_THAT(Lint(Planning("")), ElementsAre(HasSubstr("flows[0].national_opt_out: required for a purpose beyond "
                                                        "direct care and safeguarding")));
  EXPECT_THAT(Lint(Planning("    national_opt_out: applies\n")),
              ElementsAre(HasSubstr("flows[0].opt_out_basis: required when the opt-out applies")));
  EXPECT_THAT(Lint(Planning("    national_opt_out: applies\n    opt_out_basis: s251 support, CAG 21/CAG/0001\n")),
              IsEmpty());
  EXPECT_THAT(Lint(Planning("    national_opt_out: exempt\n")),
              ElementsAre(HasSubstr("flows[0].exemption: required when the opt-out is exempt")));
  EXPECT_THAT(Lint(Planning("    national_opt_out: exempt\n    exemption: required-by-law\n")),
              ElementsAre(HasSubstr("flows[0].legal_basis.statutory: required")));
  EXPECT_THAT(Lint(absl::StrReplaceAll(Planning("    national_opt_out: exempt\n    exemption: required-by-law\n"),
                                       {{"common_law: implied-consent}",
                                         "common_law: implied-consent, statutory: HSCA 2012 s259}"}})),
              IsEmpty());
  EXPECT_THAT(Lint(Planning("    national_opt_out: applies\n    opt_out_basis: x\n    exemption: consent\n")),
              ElementsAre(HasSubstr("flows[0].exemption: only with national_opt_out: exempt")));
  EXPECT_THAT(Lint(Planning("    national_opt_out: exempt\n    exemption: consent\n")),
              ElementsAre(HasSubstr("consent exempts a disclosure only under explicit consent")));
  EXPECT_THAT(Lint(Planning("    national_opt_out: exempt\n    exemption: consent\n", "[person.nhs_number]", "explicit")),
              IsEmpty());
  EXPECT_THAT(Lint(Planning("    national_opt_out: exempt\n    exemption: public-interest\n")),
              ElementsAre(HasSubstr("required for a public-interest exemption")));
  // Anonymised: no NHS number in the clear, no names, identifiers or address lines.
  const std::string anonymised = "    national_opt_out: exempt\n    exemption: anonymised\n";
  EXPECT_THAT(Lint(Planning(anonymised)), ElementsAre(HasSubstr("fields[0]: an anonymised flow"),
                                                      HasSubstr("fields[1]: an anonymised flow")));
  EXPECT_THAT(Lint(Planning(anonymised, "[person]")), ElementsAre(HasSubstr("fields[0]: an anonymised flow")));
  EXPECT_THAT(Lint(Planning(anonymised + "    transforms: [{field: person.nhs_number, pseudonymise: true}]\n",
                            "[person.nhs_number, person.birth_date, person.address.postcode]")),
              IsEmpty());
  // Opaque payloads name no person: nothing for the opt-out to act on.
  EXPECT_THAT(Lint(absl::StrReplaceAll(Planning("    payload: opaque\n", "[]", "not-applicable"),
                                       {{"article9: health-or-social-care", "article9: not-applicable"},
                                        {"common_law: implied-consent}",
                                         "common_law: not-confidential, statutory: synthetic}"}})),
              IsEmpty());
}

TEST(Agreements, SchemaErrorsNameTheKey) {
  EXPECT_THAT(Lint(Agreement("    colour: red\n")), ElementsAre(HasSubstr("a.yaml:15: flows[0].colour: unknown key")));
  EXPECT_THAT(Lint(Agreement("    purposes: [gossip]\n")), ElementsAre(HasSubstr("appears twice")));
  auto e = Lint(absl::StrReplaceAll(Agreement(), {{"direct-care", "gossip"}}));
  ASSERT_EQ(e.size(), 1u);
  EXPECT_THAT(e[0], HasSubstr("a.yaml:11: flows[0].purposes[0]: 'gossip' is not one of direct-care"));
}

TEST(Agreements, TransformRules) {
  EXPECT_THAT(Lint(Agreement("    transforms: [{field: person.address.postcode, generalise: district}]\n")),
              ElementsAre("a.yaml:15: flows[0].transforms[0].field: not released by this flow's fields, so there "
                          "is nothing to transform"));
  EXPECT_THAT(Lint(Agreement("    transforms: [{field: person.names, generalise: year}]\n")),
              ElementsAre(HasSubstr("flows[0].transforms[0].generalise: year and month generalise dates")));
  EXPECT_THAT(Lint(Agreement("    transforms: [{field: person.birth_date, generalise: district}]\n",
                             "[person.birth_date]")),
              ElementsAre(HasSubstr("district and sector generalise postcodes only")));
  EXPECT_THAT(Lint(Agreement("    transforms: [{field: person.birth_date, pseudonymise: true}]\n", "[person]")),
              ElementsAre(HasSubstr("only text fields")));
  EXPECT_THAT(Lint(Agreement("    transforms: [{field: person.nhs_number}]\n")),
              ElementsAre(HasSubstr("needs one of redact, generalise, pseudonymise")));
  EXPECT_THAT(Lint(Agreement("    transforms: [{field: person.nhs_number, redact: true}, "
                             "{field: person.nhs_number, pseudonymise: true}]\n")),
              ElementsAre(HasSubstr("transforms[1].field: a second transform of the same field")));
  EXPECT_THAT(Lint(Agreement("    transforms: [{field: person.nhs_number, pseudonymise: true}]\n")), IsEmpty());
}

TEST(Agreements, ConsentAndBasisRules) {
  EXPECT_THAT(Lint(Agreement("    safeguarding_override: true\n")),
              ElementsAre(HasSubstr("only a flow with purpose safeguarding may override")));
  EXPECT_THAT(Lint(absl::StrReplaceAll(Agreement(), {{"consent: implied", "consent: not-applicable"}})),
              ElementsAre(HasSubstr("flows[0].legal_basis.statutory: required when consent is not-applicable")));
  EXPECT_THAT(Lint(Agreement("    payload: opaque\n")),
              ElementsAre(HasSubstr("an opaque flow cannot release fields"), HasSubstr("consent must be not-applicable"),
                          HasSubstr("legal_basis.article9: an opaque flow carries no special category data")));
  // A document is carried whole: no fields, no transforms; health data, so article9 stays.
  EXPECT_THAT(Lint(Agreement("    payload: document\n")),
              ElementsAre(HasSubstr("a document flow carries the document whole: it cannot release fields")));
}

TEST(Agreements, FolderErrorsCoverEveryFileAndDuplicateIds) {
  const fs::path dir = fs::temp_directory_path() / absl::StrCat("cb-agreements-", ::getpid());
  fs::create_directories(dir);
  std::ofstream(dir / "a.yaml") << Agreement();
  std::ofstream(dir / "b.yaml") << Agreement();
  std::ofstream(dir / "c.yaml") << "id: [oops";
  std::ofstream(dir / "notes.txt") << "ignored";
  auto set = LoadAgreements(dir.string());
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(set.status().message(), HasSubstr("b.yaml:1: id: 'DSA-TEST' is also the id in"));
  EXPECT_THAT(set.status().message(), HasSubstr("c.yaml:1:"));
  fs::remove(dir / "b.yaml");
  fs::remove(dir / "c.yaml");
  EXPECT_TRUE(LoadAgreements(dir.string()).ok());
  fs::remove(dir / "a.yaml");
  EXPECT_THAT(LoadAgreements(dir.string()).status().message(), HasSubstr("no agreement files"));
  fs::remove_all(dir);
  EXPECT_THAT(LoadAgreements(dir.string()).status().message(), HasSubstr("cannot read the agreements folder"));
}

TEST(Agreements, ValidityIsUkLocalDays) {
  std::vector<LoadedAgreement> out;
  std::vector<std::string> errors;
  ParseAgreement(Agreement(), "a.yaml", &out, &errors);
  ASSERT_EQ(out.size(), 1u);
  // 2026-01-01 is GMT; the agreement ends at midnight after 31 December.
  EXPECT_EQ(out[0].valid_from, absl::FromCivil(absl::CivilDay(2026, 1, 1), absl::UTCTimeZone()));
  EXPECT_EQ(out[0].valid_until, absl::FromCivil(absl::CivilDay(2027, 1, 1), absl::UTCTimeZone()));
  // In summer a UK day starts at 23:00 UTC the day before.
  EXPECT_EQ(Day("2026-07-01"), absl::FromCivil(absl::CivilSecond(2026, 6, 30, 23, 0, 0), absl::UTCTimeZone()));
}

TEST(Agreements, PurposeWireNames) {
  EXPECT_EQ(PurposeFromWire("direct-care"), v1::PURPOSE_DIRECT_CARE);
  EXPECT_EQ(PurposeFromWire("public-health"), v1::PURPOSE_PUBLIC_HEALTH);
  EXPECT_EQ(PurposeFromWire("gossip"), v1::PURPOSE_UNSPECIFIED);
  EXPECT_EQ(PurposeFromWire("DIRECT_CARE"), v1::PURPOSE_UNSPECIFIED);
  EXPECT_EQ(PurposeToWire(v1::PURPOSE_SAFEGUARDING), "safeguarding");
}

// ------------------------------------------------------------- decisions

class Decisions : public ::testing::Test {
 protected:
  void SetUp() override {
    auto set = LoadAgreements(SourceDir() + "/deploy/agreements");
    ASSERT_TRUE(set.ok()) << set.status();
    policy_ = PolicySet::Build(*std::move(set));
  }
  DecisionInput Discharge() {
    DecisionInput in;
    in.sender = {OrgCode("RR8"), v1::ORGANISATION_KIND_NHS_TRUST};
    in.recipient = {OrgCode("503"), v1::ORGANISATION_KIND_LOCAL_AUTHORITY};
    in.workflow = "HOSPITAL_DISCHARGE";
    in.purpose = v1::PURPOSE_DIRECT_CARE;
    in.now = Day("2026-11-22");
    return in;
  }
  DecisionInput Safeguarding() {
    DecisionInput in = Discharge();
    in.workflow = "SAFEGUARDING_CONCERN";
    in.purpose = v1::PURPOSE_SAFEGUARDING;
    return in;
  }
  DecisionInput Cld() {
    DecisionInput in;
    in.sender = {OrgCode("503"), v1::ORGANISATION_KIND_LOCAL_AUTHORITY};
    in.recipient = {OrgCode("X26"), v1::ORGANISATION_KIND_NHS_ENGLAND};
    in.workflow = "CLD_RETURN";
    in.purpose = v1::PURPOSE_PLANNING;
    in.now = Day("2026-11-22");
    return in;
  }
  static v1::Directive Dissent(v1::Purpose p, const std::string& scope_ods = "") {
    v1::Directive d;
    d.set_id("d1");
    d.set_kind(v1::DIRECTIVE_KIND_DISSENT);
    d.set_purpose(p);
    if (!scope_ods.empty()) d.mutable_scope()->set_ods(scope_ods);
    return d;
  }
  std::shared_ptr<const PolicySet> policy_;
};

TEST_F(Decisions, CoveredFlowAllows) {
  Decision d = policy_->Decide(Discharge());
  ASSERT_TRUE(d.allowed);
  EXPECT_THAT(d.reasons, IsEmpty());
  EXPECT_EQ(d.flow->agreement->agreement.id(), "DSA-ACUTE-TO-SOCIAL-CARE");
  EXPECT_EQ(d.flow->flow->name(), "admission-and-discharge");
  EXPECT_FALSE(d.opt_out_applies);
}

TEST_F(Decisions, NothingCoveredDenies) {
  for (auto change : std::vector<std::function<void(DecisionInput&)>>{
           [](DecisionInput& in) { in.workflow = "HOSPITAL_TRANSFER"; },
           [](DecisionInput& in) { in.purpose = v1::PURPOSE_RESEARCH; },
           [](DecisionInput& in) { in.recipient = {OrgCode("X26"), v1::ORGANISATION_KIND_NHS_ENGLAND}; },
           [](DecisionInput& in) { in.sender = {OrgCode("503"), v1::ORGANISATION_KIND_LOCAL_AUTHORITY}; }}) {
    DecisionInput in = Discharge();
    change(in);
    Decision d = policy_->Decide(in);
    EXPECT_FALSE(d.allowed);
    EXPECT_THAT(d.reasons, ElementsAre("NO_AGREEMENT"));
    EXPECT_EQ(d.flow, nullptr);
  }
}

TEST_F(Decisions, ValidityPeriod) {
  DecisionInput in = Discharge();
  in.now = Day("2029-04-01");  // the day after valid_until
  EXPECT_THAT(policy_->Decide(in).reasons, ElementsAre("AGREEMENT_EXPIRED"));
  in.now = Day("2029-04-01") - absl::Seconds(1);
  EXPECT_TRUE(policy_->Decide(in).allowed);
  in.now = Day("2026-04-01") - absl::Seconds(1);
  EXPECT_THAT(policy_->Decide(in).reasons, ElementsAre("AGREEMENT_NOT_YET_VALID"));
}

TEST_F(Decisions, DissentDeniesImpliedConsent) {
  PersonConsent p;
  p.standing.push_back(Dissent(v1::PURPOSE_DIRECT_CARE));
  DecisionInput in = Discharge();
  in.consent = &p;
  Decision d = policy_->Decide(in);
  EXPECT_FALSE(d.allowed);
  EXPECT_THAT(d.reasons, ElementsAre("CONSENT_DISSENT"));
  EXPECT_EQ(d.flow->flow->name(), "admission-and-discharge");
}

TEST_F(Decisions, DissentScopeAndPurposeMustMatch) {
  PersonConsent p;
  p.standing.push_back(Dissent(v1::PURPOSE_DIRECT_CARE, "511"));  // another council
  p.standing.push_back(Dissent(v1::PURPOSE_RESEARCH));             // another purpose
  DecisionInput in = Discharge();
  in.consent = &p;
  EXPECT_TRUE(policy_->Decide(in).allowed);
  p.standing[0].mutable_scope()->set_kind(v1::ORGANISATION_KIND_LOCAL_AUTHORITY);
  EXPECT_THAT(policy_->Decide(in).reasons, ElementsAre("CONSENT_DISSENT"));
}

TEST_F(Decisions, ExplicitConsentModel) {
  PersonConsent p;
  EXPECT_EQ(ConsentVerdict(v1::CONSENT_MODEL_EXPLICIT, false, v1::PURPOSE_RESEARCH, OrgCode("X26"),
                           v1::ORGANISATION_KIND_NHS_ENGLAND, nullptr),
            "CONSENT_REQUIRED");
  v1::Directive c = Dissent(v1::PURPOSE_RESEARCH);
  c.set_kind(v1::DIRECTIVE_KIND_CONSENT);
  p.standing.push_back(c);
  EXPECT_EQ(ConsentVerdict(v1::CONSENT_MODEL_EXPLICIT, false, v1::PURPOSE_RESEARCH, OrgCode("X26"),
                           v1::ORGANISATION_KIND_NHS_ENGLAND, &p),
            "");
  p.standing.push_back(Dissent(v1::PURPOSE_RESEARCH));  // dissent wins beside consent
  EXPECT_EQ(ConsentVerdict(v1::CONSENT_MODEL_EXPLICIT, false, v1::PURPOSE_RESEARCH, OrgCode("X26"),
                           v1::ORGANISATION_KIND_NHS_ENGLAND, &p),
            "CONSENT_DISSENT");
  // not-applicable consults neither, but still honours an applicable opt-out.
  EXPECT_EQ(ConsentVerdict(v1::CONSENT_MODEL_NOT_APPLICABLE, false, v1::PURPOSE_RESEARCH, OrgCode("X26"),
                           v1::ORGANISATION_KIND_NHS_ENGLAND, &p),
            "");
  p.national_opt_out = true;
  EXPECT_EQ(ConsentVerdict(v1::CONSENT_MODEL_NOT_APPLICABLE, true, v1::PURPOSE_RESEARCH, OrgCode("X26"),
                           v1::ORGANISATION_KIND_NHS_ENGLAND, &p),
            "NATIONAL_OPT_OUT");
}

TEST_F(Decisions, TheCldReturnIsRequiredByLawSoTheOptOutDoesNotStopIt) {
  PersonConsent p;
  p.national_opt_out = true;
  DecisionInput cld = Cld();
  cld.consent = &p;
  Decision d = policy_->Decide(cld);
  EXPECT_TRUE(d.allowed);
  EXPECT_FALSE(d.opt_out_applies);
  EXPECT_EQ(d.flow->OptOutRule(v1::PURPOSE_PLANNING),
            "does not apply: exempt, required-by-law (Health and Social Care Act 2012 s259 Data Provision Notice "
            "(Adult Social Care Client Level Data))");
}

TEST_F(Decisions, WhereTheOptOutAppliesItDeniesPlanningNotDirectCare) {
  auto set = LoadAgreements(SourceDir() + "/deploy/agreements");
  ASSERT_TRUE(set.ok()) << set.status();
  for (auto& a : set->agreements) {
    if (a.agreement.id() != "DSA-ASC-CLD") continue;
    v1::Flow* f = a.agreement.mutable_flows(0);
    f->set_national_opt_out(v1::OPT_OUT_RULE_APPLIES);
    f->clear_exemption();
    f->set_opt_out_basis("s251 support (synthetic)");
  }
  const auto applies = PolicySet::Build(*std::move(set));
  PersonConsent p;
  p.national_opt_out = true;
  DecisionInput cld = Cld();
  cld.consent = &p;
  Decision d = applies->Decide(cld);
  EXPECT_FALSE(d.allowed);
  EXPECT_THAT(d.reasons, ElementsAre("NATIONAL_OPT_OUT"));
  ASSERT_NE(d.flow, nullptr);
  EXPECT_TRUE(d.opt_out_applies) << "was false on a denial, so explain said \"does not apply\"";
  EXPECT_EQ(d.flow->OptOutRule(v1::PURPOSE_PLANNING), "applies: the agreement says so (s251 support (synthetic))");
  DecisionInput care = Discharge();
  care.consent = &p;
  EXPECT_TRUE(applies->Decide(care).allowed);
  p.national_opt_out = false;
  d = applies->Decide(cld);
  EXPECT_TRUE(d.allowed);
  EXPECT_TRUE(d.opt_out_applies);
}

TEST_F(Decisions, TheOptOutRuleCoversEveryPurposeAndNamesItsBasis) {
  // Unstated, the rule covers every purpose beyond direct care and
  // safeguarding (commissioning and public health too); stated, it is
  // what the agreement says.
  v1::Flow flow;
  const CompiledFlow f{nullptr, &flow, Minimiser{}, 0};
  for (v1::Purpose p : {v1::PURPOSE_PLANNING, v1::PURPOSE_RESEARCH, v1::PURPOSE_COMMISSIONING,
                        v1::PURPOSE_PUBLIC_HEALTH}) {
    EXPECT_TRUE(f.OptOutApplies(p)) << v1::Purpose_Name(p);
    EXPECT_THAT(f.OptOutRule(p), ::testing::StartsWith("applies (to every purpose beyond direct care"));
  }
  for (v1::Purpose p : {v1::PURPOSE_DIRECT_CARE, v1::PURPOSE_SAFEGUARDING}) {
    EXPECT_FALSE(f.OptOutApplies(p)) << v1::Purpose_Name(p);
    EXPECT_EQ(f.OptOutRule(p), "does not apply (never to direct care or safeguarding)");
  }
  flow.set_national_opt_out(v1::OPT_OUT_RULE_EXEMPT);
  flow.set_exemption(v1::OPT_OUT_EXEMPTION_PUBLIC_INTEREST);
  flow.set_opt_out_basis("a named outbreak (synthetic)");
  EXPECT_FALSE(f.OptOutApplies(v1::PURPOSE_PUBLIC_HEALTH));
  EXPECT_EQ(f.OptOutRule(v1::PURPOSE_PUBLIC_HEALTH), "does not apply: exempt, public-interest (a named outbreak (synthetic))");
  flow.set_exemption(v1::OPT_OUT_EXEMPTION_ANONYMISED);
  EXPECT_EQ(f.OptOutRule(v1::PURPOSE_PLANNING), "does not apply: exempt, anonymised");
  flow.set_national_opt_out(v1::OPT_OUT_RULE_APPLIES);
  EXPECT_TRUE(f.OptOutApplies(v1::PURPOSE_COMMISSIONING));
}

TEST_F(Decisions, SafeguardingOverrideNeedsJustification) {
  PersonConsent p;
  p.standing.push_back(Dissent(v1::PURPOSE_SAFEGUARDING));
  DecisionInput in = Safeguarding();
  in.consent = &p;
  in.justification = "   ";
  Decision d = policy_->Decide(in);
  EXPECT_FALSE(d.allowed);
  EXPECT_THAT(d.reasons, ElementsAre("OVERRIDE_JUSTIFICATION_MISSING", "CONSENT_DISSENT"));
  in.justification = "Risk of serious harm; strategy meeting 21/11";
  d = policy_->Decide(in);
  EXPECT_TRUE(d.allowed);
  EXPECT_TRUE(d.overridden);
  EXPECT_THAT(d.reasons, ElementsAre("SAFEGUARDING_OVERRIDE"));
  EXPECT_EQ(d.flow->flow->name(), "trust-to-council");
  // Without dissent a justification is no override.
  in.consent = nullptr;
  d = policy_->Decide(in);
  EXPECT_TRUE(d.allowed);
  EXPECT_FALSE(d.overridden);
}

TEST_F(Decisions, NoOverrideOutsideSafeguarding) {
  PersonConsent p;
  p.standing.push_back(Dissent(v1::PURPOSE_DIRECT_CARE));
  DecisionInput in = Discharge();
  in.consent = &p;
  in.justification = "urgent";
  EXPECT_THAT(policy_->Decide(in).reasons, ElementsAre("CONSENT_DISSENT"));
}

TEST_F(Decisions, PayloadKindMustMatchTheFlow) {
  DecisionInput in = Discharge();
  in.opaque = true;
  EXPECT_THAT(policy_->Decide(in).reasons, ElementsAre("PAYLOAD_KIND_NOT_ALLOWED"));
}

TEST_F(Decisions, IndexedLookupFindsOneFlowAmong500) {
  AgreementSet many;
  for (int i = 0; i < 500; ++i) {
    std::vector<std::string> errors;
    std::string yaml = absl::StrReplaceAll(Agreement(), {{"DSA-TEST", absl::StrCat("DSA-", i)},
                                                         {"HOSPITAL_DISCHARGE", absl::StrCat("WF_", i)}});
    ParseAgreement(yaml, "x.yaml", &many.agreements, &errors);
    ASSERT_THAT(errors, IsEmpty());
  }
  auto set = PolicySet::Build(std::move(many));
  DecisionInput in = Discharge();
  in.workflow = "WF_417";
  in.now = Day("2026-06-01");
  Decision d = set->Decide(in);
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(d.flow->agreement->agreement.id(), "DSA-417");
  EXPECT_EQ(d.trace.size(), 1u);  // only the one indexed flow was considered
}

// ---------------------------------------------------------- minimisation

v1::CareRecord SampleRecord() {
  v1::CareRecord r;
  auto* p = r.mutable_person();
  p->set_nhs_number("9434765919");
  p->set_nhs_number_status(v1::NHS_NUMBER_STATUS_PRESENT_VERIFIED);
  p->add_local_identifiers()->set_value("MRN123");
  auto* n = p->add_names();
  n->set_family("Example");
  n->add_given("Test");
  p->mutable_birth_date()->set_year(1941);
  p->mutable_birth_date()->set_month(7);
  p->mutable_birth_date()->set_day(14);
  p->set_sex(v1::SEX_FEMALE);
  p->mutable_address()->add_lines("1 Test Street");
  p->mutable_address()->set_postcode("ls1 4ap");
  p->set_gp_practice("Y06601");
  auto* e = r.add_events();
  e->set_reference("EV1");
  e->mutable_discharge()->set_discharge_destination("19");
  auto* e2 = r.add_events();
  e2->set_reference("EV2");
  e2->mutable_admission()->set_consultant("C1234567");
  e2->mutable_admission()->set_ward("W12");
  return r;
}

Minimiser Compile(std::vector<std::string> fields, std::vector<v1::FieldTransform> transforms = {}) {
  google::protobuf::RepeatedPtrField<std::string> f(fields.begin(), fields.end());
  google::protobuf::RepeatedPtrField<v1::FieldTransform> t(transforms.begin(), transforms.end());
  auto m = Minimiser::Compile(f, t);
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

v1::FieldTransform T(const std::string& field, v1::Generalisation g) {
  v1::FieldTransform t;
  t.set_field(field);
  t.set_generalise(g);
  return t;
}

TEST(Minimise, KeepsOnlyReleasedFieldsAndListsTheRest) {
  v1::CareRecord r = SampleRecord();
  auto withheld = Compile({"person.nhs_number", "person.names", "events.reference", "events.discharge"}).Apply(&r, "");
  EXPECT_THAT(withheld, ElementsAre("events.admission", "person.address", "person.birth_date", "person.gp_practice",
                                    "person.local_identifiers", "person.nhs_number_status", "person.sex"));
  v1::CareRecord want;
  want.mutable_person()->set_nhs_number("9434765919");
  *want.mutable_person()->add_names() = SampleRecord().person().names(0);
  want.add_events()->set_reference("EV1");
  want.mutable_events(0)->mutable_discharge()->set_discharge_destination("19");
  want.add_events()->set_reference("EV2");
  EXPECT_EQ(r.SerializeAsString(), want.SerializeAsString());
}

TEST(Minimise, RedactInsideAReleasedPart) {
  v1::CareRecord r = SampleRecord();
  v1::FieldTransform t;
  t.set_field("events.admission.consultant");
  t.set_redact(true);
  auto withheld = Compile({"person", "events"}, {t}).Apply(&r, "");
  EXPECT_THAT(withheld, ElementsAre("events.admission.consultant"));
  EXPECT_EQ(r.events(1).admission().ward(), "W12");
  EXPECT_EQ(r.events(1).admission().consultant(), "");
  EXPECT_EQ(r.person().local_identifiers(0).value(), "MRN123");
}

TEST(Minimise, GeneralisationIsExact) {
  v1::CareRecord r = SampleRecord();
  auto withheld = Compile({"person.birth_date", "person.address.postcode"},
                          {T("person.birth_date", v1::GENERALISATION_YEAR),
                           T("person.address.postcode", v1::GENERALISATION_DISTRICT)})
                      .Apply(&r, "");
  EXPECT_THAT(withheld, ElementsAre("events", "person.address.lines", "person.gp_practice", "person.local_identifiers",
                                    "person.names", "person.nhs_number", "person.nhs_number_status", "person.sex"));
  EXPECT_EQ(r.person().birth_date().year(), 1941);
  EXPECT_EQ(r.person().birth_date().month(), 0);
  EXPECT_EQ(r.person().birth_date().day(), 0);
  EXPECT_EQ(r.person().address().postcode(), "LS1");

  r = SampleRecord();
  Compile({"person.birth_date", "person.address.postcode"},
          {T("person.birth_date", v1::GENERALISATION_MONTH), T("person.address.postcode", v1::GENERALISATION_SECTOR)})
      .Apply(&r, "");
  EXPECT_EQ(r.person().birth_date().month(), 7);
  EXPECT_EQ(r.person().birth_date().day(), 0);
  EXPECT_EQ(r.person().address().postcode(), "LS1 4");
}

TEST(Minimise, PostcodeShapes) {
  EXPECT_EQ(PostcodeDistrict("SW1A 1AA"), "SW1A");
  EXPECT_EQ(PostcodeSector("SW1A1AA"), "SW1A 1");
  EXPECT_EQ(PostcodeDistrict("m1 1ae"), "M1");
  EXPECT_EQ(PostcodeSector("B33 8TH"), "B33 8");
  EXPECT_EQ(PostcodeDistrict("not a postcode"), "");
  EXPECT_EQ(PostcodeDistrict("LS1"), "");
  EXPECT_EQ(PostcodeDistrict("LS1 4A-"), "");
}

TEST(Minimise, UnrecognisedPostcodeIsWithheldNotGuessed) {
  v1::CareRecord r;
  r.mutable_person()->mutable_address()->set_postcode("UNKNOWN");
  auto withheld = Compile({"person.address.postcode"}, {T("person.address.postcode", v1::GENERALISATION_DISTRICT)})
                      .Apply(&r, "");
  EXPECT_THAT(withheld, ElementsAre("person.address.postcode"));
  EXPECT_EQ(r.person().address().postcode(), "");
}

TEST(Minimise, TimestampsGeneraliseToTheFirstOfMonthOrYear) {
  v1::CareRecord r;
  r.add_events()->mutable_occurred_at()->set_seconds(
      absl::ToUnixSeconds(absl::FromCivil(absl::CivilSecond(2026, 11, 22, 13, 45, 7), absl::UTCTimeZone())));
  Compile({"events.occurred_at"}, {T("events.occurred_at", v1::GENERALISATION_MONTH)}).Apply(&r, "");
  EXPECT_EQ(r.events(0).occurred_at().seconds(),
            absl::ToUnixSeconds(absl::FromCivil(absl::CivilDay(2026, 11, 1), absl::UTCTimeZone())));
}

TEST(Minimise, PseudonymsAreStablePerKeyAndDifferAcrossKeys) {
  // RFC 4231 test case 2.
  EXPECT_EQ(Pseudonym("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  v1::FieldTransform t;
  t.set_field("person.nhs_number");
  t.set_pseudonymise(true);
  Minimiser m = Compile({"person.nhs_number"}, {t});
  EXPECT_TRUE(m.needs_key());
  v1::CareRecord a = SampleRecord(), a2 = SampleRecord(), b = SampleRecord();
  m.Apply(&a, "key-for-recipient-a-0123456789abcdef");
  m.Apply(&a2, "key-for-recipient-a-0123456789abcdef");
  m.Apply(&b, "key-for-recipient-b-0123456789abcdef");
  EXPECT_EQ(a.person().nhs_number(), a2.person().nhs_number());
  EXPECT_NE(a.person().nhs_number(), b.person().nhs_number());
  EXPECT_EQ(a.person().nhs_number().size(), 64u);
  EXPECT_EQ(a.person().nhs_number(), Pseudonym("key-for-recipient-a-0123456789abcdef", "9434765919"));
}

TEST(Minimise, FieldPaths) {
  EXPECT_TRUE(ResolveFieldPath("person.address.postcode").ok());
  EXPECT_TRUE(ResolveFieldPath("events.care_package.start_date").ok());
  EXPECT_THAT(ResolveFieldPath("person.birth_date.year").status().message(),
              HasSubstr("'birth_date' has no fields beneath it"));
  EXPECT_THAT(ResolveFieldPath("persons").status().message(), HasSubstr("'persons' is not a field of carebroker.v1.CareRecord"));
  EXPECT_FALSE(ResolveFieldPath("").ok());
}

// --------------------------------------------------------------- consent

TEST(ConsentBook, RecordWithdrawAndOptOut) {
  ConsentBook book;
  v1::ConsentChange c;
  c.set_nhs_number("9434765919");
  *c.mutable_recorded() = v1::Directive();
  c.mutable_recorded()->set_id("d1");
  c.mutable_recorded()->set_kind(v1::DIRECTIVE_KIND_DISSENT);
  ASSERT_TRUE(book.Apply(c).ok());
  EXPECT_EQ(book.Find("9434765919")->standing.size(), 1u);
  EXPECT_TRUE(book.FindDirective("9434765919", "d1").has_value());
  EXPECT_FALSE(book.Find("9999999999").has_value());

  v1::ConsentChange w;
  w.set_nhs_number("9434765919");
  w.set_withdrawn("d1");
  ASSERT_TRUE(book.Apply(w).ok());
  EXPECT_FALSE(book.Find("9434765919").has_value());
  EXPECT_EQ(book.Apply(w).code(), absl::StatusCode::kFailedPrecondition);

  v1::ConsentChange o;
  o.set_nhs_number("9434765919");
  o.set_national_opt_out(true);
  ASSERT_TRUE(book.Apply(o).ok());
  EXPECT_TRUE(book.Find("9434765919")->national_opt_out);
  o.set_national_opt_out(false);
  ASSERT_TRUE(book.Apply(o).ok());
  EXPECT_EQ(book.people(), 0u);
}

TEST(ConsentBook, APersonNotYetTracedIsFoundByALocalIdentifierOfTheRecord) {
  ConsentBook book;
  v1::ConsentChange c;
  c.mutable_local_identifier()->set_value("SC-12345");
  c.mutable_local_identifier()->set_assigner("503");
  c.mutable_recorded()->set_id("d1");
  c.mutable_recorded()->set_kind(v1::DIRECTIVE_KIND_DISSENT);
  c.mutable_recorded()->set_purpose(v1::PURPOSE_DIRECT_CARE);
  ASSERT_TRUE(book.Apply(c).ok());
  EXPECT_TRUE(book.Find("503|SC-12345").has_value());
  EXPECT_FALSE(book.Find("SC-12345").has_value()) << "the value alone names no one: another assigner may reuse it";
  v1::ConsentChange o;
  o.set_nhs_number("9434765919");
  o.set_national_opt_out(true);
  ASSERT_TRUE(book.Apply(o).ok());

  // A record's keys: its NHS number, then each local identifier that can
  // name a person (an assigner is needed).
  google::protobuf::RepeatedPtrField<v1::LocalIdentifier> ids;
  auto* council = ids.Add();
  council->set_value("SC-12345");
  council->set_assigner("503");
  ids.Add()->set_value("NO-ASSIGNER");
  auto* spaced = ids.Add();
  spaced->set_value("HAS SPACE");
  spaced->set_assigner("RR8");
  EXPECT_THAT(PersonKeys("9434765919", ids), ElementsAre("9434765919", "503|SC-12345"));
  EXPECT_THAT(PersonKeys("", ids), ElementsAre("503|SC-12345"));
  EXPECT_THAT(PersonKeys("", {}), IsEmpty());

  // Both the opt-out under the NHS number and the dissent under the local identifier stand.
  auto both = book.FindAll(PersonKeys("9434765919", ids));
  ASSERT_TRUE(both.has_value());
  EXPECT_TRUE(both->national_opt_out);
  ASSERT_EQ(both->standing.size(), 1u);
  EXPECT_EQ(ConsentVerdict(v1::CONSENT_MODEL_IMPLIED, false, v1::PURPOSE_DIRECT_CARE, OrgCode("RR8"),
                           v1::ORGANISATION_KIND_NHS_TRUST, &*both),
            "CONSENT_DISSENT");
  EXPECT_FALSE(book.FindAll({"RR8|OTHER"}).has_value());
  // Withdrawn under the same key.
  v1::ConsentChange w;
  *w.mutable_local_identifier() = c.local_identifier();
  w.set_withdrawn("d1");
  ASSERT_TRUE(book.Apply(w).ok());
  EXPECT_FALSE(book.Find("503|SC-12345").has_value());
}

// ----------------------------------------------------------------- cases

TEST(Cases, DeployExampleCasesAllPass) {
  auto set = PolicySet::Load(SourceDir() + "/deploy/agreements");
  ASSERT_TRUE(set.ok()) << set.status();
  auto cases = LoadPolicyCases(SourceDir() + "/deploy/agreement-cases.yaml");
  ASSERT_TRUE(cases.ok()) << cases.status();
  ASSERT_GE(cases->cases_size(), 9);
  for (const auto& c : cases->cases()) {
    auto got = EvaluateCase(**set, c, SourceDir() + "/deploy", absl::Now());
    ASSERT_TRUE(got.ok()) << c.name() << ": " << got.status();
    EXPECT_THAT(CheckExpectation(c.expect(), *got), IsEmpty()) << c.name();
  }
}

class CasesFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / absl::StrCat("cb-cases-", ::getpid());
    fs::create_directories(dir_ / "agreements");
    std::ofstream(dir_ / "agreements" / "a.yaml") << Agreement("    transforms: [{field: person.names, redact: true}]\n");
    std::ofstream(dir_ / "record.json")
        << R"({"person": {"nhsNumber": "9434765919", "names": [{"family": "Synthetic"}], "sex": "SEX_MALE"}})";
    auto set = PolicySet::Load((dir_ / "agreements").string());
    ASSERT_TRUE(set.ok()) << set.status();
    set_ = *set;
  }
  void TearDown() override { fs::remove_all(dir_); }

  absl::StatusOr<v1::PolicyCases> Load(const std::string& yaml) {
    std::ofstream(dir_ / "cases.yaml") << yaml;
    return LoadPolicyCases((dir_ / "cases.yaml").string());
  }

  // One case with the given extra keys, evaluated; its mismatches.
  std::vector<std::string> Run(const std::string& extra, const std::string& date = "2026-06-01") {
    auto cases = Load(absl::StrCat(
        "cases:\n  - name: c\n    sender: RR8\n    sender_kind: nhs-trust\n    recipient: \"503\"\n"
        "    recipient_kind: local-authority\n    workflow: HOSPITAL_DISCHARGE\n    purpose: direct-care\n"
        "    date: ",
        date, "\n", extra));
    EXPECT_TRUE(cases.ok()) << cases.status();
    if (!cases.ok()) return {"unreadable"};
    auto got = EvaluateCase(*set_, cases->cases(0), dir_.string(), absl::Now());
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) return {"unevaluated"};
    return CheckExpectation(cases->cases(0).expect(), *got);
  }

  fs::path dir_;
  std::shared_ptr<const PolicySet> set_;
};

TEST_F(CasesFile, MatchingExpectationsPass) {
  EXPECT_THAT(Run("    record: record.json\n    expect: {decision: allow, agreement: DSA-TEST, flow: test-flow, "
                  "withheld: [person.names, person.sex], safeguarding_override: false}\n"),
              IsEmpty());
  EXPECT_THAT(Run("    consent: {directives: [{kind: dissent, purpose: direct-care}]}\n"
                  "    expect: {decision: deny, reason: CONSENT_DISSENT, flow: test-flow}\n"),
              IsEmpty());
}

TEST_F(CasesFile, EveryMismatchIsReported) {
  EXPECT_THAT(Run("    record: record.json\n    expect: {decision: deny, reason: NO_AGREEMENT, agreement: DSA-OTHER, "
                  "flow: other, withheld: [person.sex], safeguarding_override: true}\n"),
              ElementsAre("decision: expected deny, got allow", "reason: expected NO_AGREEMENT, got none",
                          "agreement: expected DSA-OTHER, got DSA-TEST", "flow: expected other, got test-flow",
                          "safeguarding_override: expected true, got false",
                          "withheld: expected [person.sex], got [person.names, person.sex]"));
  EXPECT_THAT(Run("    expect: {decision: allow}\n", "2027-01-01"),
              ElementsAre("decision: expected allow, got deny (AGREEMENT_EXPIRED)"));
}

TEST_F(CasesFile, BadCasesNameFileLineAndKey) {
  auto bad = Load(
      "cases:\n"
      "  - name: one\n"
      "    sender: rr8\n"
      "    sender_kind: nhs-trust\n"
      "    recipient: \"503\"\n"
      "    recipient_kind: local-authority\n"
      "    workflow: discharge\n"
      "    purpose: gossip\n"
      "    expect: {withheld: [person.names]}\n");
  ASSERT_FALSE(bad.ok());
  const std::string f = (dir_ / "cases.yaml").string();
  EXPECT_THAT(bad.status().message(), HasSubstr(f + ":3: cases[0].sender: must be an ODS code"));
  EXPECT_THAT(bad.status().message(), HasSubstr(f + ":7: cases[0].workflow: must be upper snake case"));
  EXPECT_THAT(bad.status().message(), HasSubstr(f + ":8: cases[0].purpose: must be one of"));
  EXPECT_THAT(bad.status().message(), HasSubstr(f + ":9: cases[0].expect.withheld: needs a record"));
  EXPECT_THAT(Load("cases:\n  - {name: x, sendr: RR8}\n").status().message(), HasSubstr(":2: cases[0].sendr"));
  EXPECT_THAT(Load("cases: []\n").status().message(), HasSubstr("no cases"));
  EXPECT_THAT(LoadPolicyCases((dir_ / "missing.yaml").string()).status().message(), HasSubstr("missing.yaml"));
}

TEST_F(CasesFile, UnreadableRecordIsAnError) {
  auto cases = Load("cases:\n  - {name: c, sender: RR8, sender_kind: nhs-trust, recipient: \"503\", "
                    "recipient_kind: local-authority, workflow: HOSPITAL_DISCHARGE, purpose: direct-care, "
                    "record: nowhere.json}\n");
  ASSERT_TRUE(cases.ok()) << cases.status();
  EXPECT_FALSE(EvaluateCase(*set_, cases->cases(0), dir_.string(), Day("2026-06-01")).ok());
  std::ofstream(dir_ / "nowhere.json") << "{\"person\": 7}";
  auto got = EvaluateCase(*set_, cases->cases(0), dir_.string(), Day("2026-06-01"));
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(got.status().message(), HasSubstr("not a carebroker.v1.CareRecord in JSON"));
}

TEST(Cases, PresentPathsListsLeavesOnce) {
  v1::CareRecord r;
  r.mutable_person()->set_nhs_number("9434765919");
  r.mutable_person()->mutable_birth_date()->set_year(1950);
  r.add_events()->set_reference("a");
  r.add_events()->set_reference("b");
  r.mutable_events(1)->mutable_discharge()->mutable_discharged_at()->set_seconds(1);
  EXPECT_THAT(PresentPaths(r), ElementsAre("events.discharge.discharged_at", "events.reference", "person.birth_date",
                                           "person.nhs_number"));
}

}  // namespace
}  // namespace carebroker::policy
