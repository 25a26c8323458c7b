#include "adapters/fhir/fhir_xml.h"

#include <expat.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/reasons.h"

namespace carebroker::fhir {
namespace {

using Json = nlohmann::json;

constexpr char kFhirNs[] = "http://hl7.org/fhir";
constexpr char kXhtmlNs[] = "http://www.w3.org/1999/xhtml";
constexpr char kSep = '|';  // between namespace and local name in expat's names
constexpr size_t kMaxDepth = 64;

bool AlwaysRepeats(absl::string_view name) {
  return name == "extension" || name == "modifierExtension" || name == "coding" || name == "given" ||
         name == "prefix" || name == "suffix" || name == "line";
}

bool IsResourceName(absl::string_view name) { return !name.empty() && absl::ascii_isupper(name[0]); }

// One open element.
struct Frame {
  std::string name;
  Json object = Json::object();
  bool has_value = false;
  std::string value;
  Json resource;  // the resource inside, for Bundle.entry.resource and the like
};

class Converter {
 public:
  explicit Converter(XML_Parser p) : parser_(p) {}

  static void XMLCALL Start(void* self, const XML_Char* name, const XML_Char** attrs) {
    static_cast<Converter*>(self)->OnStart(name, attrs);
  }
  static void XMLCALL End(void* self, const XML_Char*) { static_cast<Converter*>(self)->OnEnd(); }
  static void XMLCALL Text(void* self, const XML_Char* s, int len) {
    static_cast<Converter*>(self)->OnText(absl::string_view(s, static_cast<size_t>(len)));
  }
  static void XMLCALL Doctype(void* self, const XML_Char*, const XML_Char*, const XML_Char*, int) {
    static_cast<Converter*>(self)->Fail("a DOCTYPE is not allowed in FHIR XML");
  }

  const std::string& error() const { return error_; }
  Json& result() { return result_; }

 private:
  void Fail(std::string why) {
    if (error_.empty()) error_ = absl::StrCat(why, " (line ", XML_GetCurrentLineNumber(parser_), ")");
    XML_StopParser(parser_, XML_FALSE);
  }

  // After a failure expat may still call a handler or two; they do nothing.
  bool failed() const { return !error_.empty(); }

  void OnStart(const XML_Char* qname, const XML_Char** attrs) {
    if (failed()) return;
    if (skip_depth_ > 0) {
      ++skip_depth_;
      return;
    }
    const absl::string_view q = qname;
    const size_t sep = q.find(kSep);
    const absl::string_view ns = sep == absl::string_view::npos ? "" : q.substr(0, sep);
    const absl::string_view local = sep == absl::string_view::npos ? q : q.substr(sep + 1);
    if (ns == kXhtmlNs && !stack_.empty()) {  // narrative: not part of the record
      skip_depth_ = 1;
      return;
    }
    if (ns != kFhirNs) return Fail("an element outside the FHIR namespace http://hl7.org/fhir");
    if (stack_.size() >= kMaxDepth) return Fail("elements nested too deeply");
    if (stack_.empty() && !IsResourceName(local)) return Fail("the root element is not a FHIR resource");
    Frame f;
    f.name = std::string(local);
    if (IsResourceName(local)) f.object["resourceType"] = f.name;
    for (const XML_Char** a = attrs; *a != nullptr; a += 2) {
      const absl::string_view key = a[0];
      if (key == "value") {
        f.has_value = true;
        f.value = a[1];
      } else if (key == "url" || key == "id") {
        f.object[std::string(key)] = a[1];
      }
      // Other attributes (xml:lang, xsi:schemaLocation) carry nothing for the record.
    }
    stack_.push_back(std::move(f));
  }

  void OnEnd() {
    if (failed()) return;
    if (skip_depth_ > 0) {
      --skip_depth_;
      return;
    }
    Frame f = std::move(stack_.back());
    stack_.pop_back();
    if (stack_.empty()) {
      result_ = std::move(f.object);
      return;
    }
    Frame& parent = stack_.back();
    if (IsResourceName(f.name)) {
      if (!parent.resource.is_null()) return Fail("two resources in one element");
      parent.resource = std::move(f.object);
      return;
    }
    Json value;
    if (f.has_value) {
      value = std::move(f.value);
      if (!f.object.empty()) Add(parent.object, "_" + f.name, std::move(f.object));
    } else if (!f.resource.is_null()) {
      value = std::move(f.resource);
    } else {
      value = std::move(f.object);
    }
    Add(parent.object, f.name, std::move(value));
  }

  static void Add(Json& parent, const std::string& name, Json value) {
    auto it = parent.find(name);
    if (it == parent.end()) {
      if (AlwaysRepeats(name)) {
        parent[name] = Json::array({std::move(value)});
      } else {
        parent[name] = std::move(value);
      }
      return;
    }
    if (!it->is_array()) *it = Json::array({std::move(*it)});
    it->push_back(std::move(value));
  }

  void OnText(absl::string_view s) {
    if (failed() || skip_depth_ > 0 || absl::StripAsciiWhitespace(s).empty()) return;
    Fail("text outside a value attribute");
  }

  XML_Parser parser_;
  std::vector<Frame> stack_;
  int skip_depth_ = 0;
  Json result_;
  std::string error_;
};

struct ParserFree {
  void operator()(XML_Parser p) const { XML_ParserFree(p); }
};

}  // namespace

absl::StatusOr<Json> FhirXmlToJson(absl::string_view xml) {
  std::unique_ptr<XML_ParserStruct, ParserFree> parser(XML_ParserCreateNS(nullptr, kSep));
  if (parser == nullptr) return absl::ResourceExhaustedError("XML parser: out of memory");
  Converter c(parser.get());
  XML_SetUserData(parser.get(), &c);
  XML_SetElementHandler(parser.get(), Converter::Start, Converter::End);
  XML_SetCharacterDataHandler(parser.get(), Converter::Text);
  XML_SetStartDoctypeDeclHandler(parser.get(), Converter::Doctype);
  if (xml.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return InvalidArgument(reason::kFhirInvalid, "the XML document is too large");
  }
  if (XML_Parse(parser.get(), xml.data(), static_cast<int>(xml.size()), XML_TRUE) != XML_STATUS_OK) {
    if (!c.error().empty()) return InvalidArgument(reason::kFhirInvalid, absl::StrCat("FHIR XML: ", c.error()));
    return InvalidArgument(reason::kFhirInvalid, absl::StrCat("not well-formed XML: ", XML_ErrorString(XML_GetErrorCode(parser.get())),
                                                        " (line ", XML_GetCurrentLineNumber(parser.get()), ")"));
  }
  return std::move(c.result());
}

}  // namespace carebroker::fhir
