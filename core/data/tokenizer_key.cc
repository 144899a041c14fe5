#include "core/data/tokenizer_key.h"

#include "absl/strings/str_cat.h"

namespace modamba::data {

void AddKeyMetadata(const TokenizerKey& key, std::map<std::string, std::string>* metadata) {
  if (!key.data_sha256.empty()) (*metadata)["data_sha256"] = key.data_sha256;
  if (!key.code_version.empty()) (*metadata)["code_version"] = key.code_version;
}

TokenizerKey KeyFromMetadata(const std::map<std::string, std::string>& metadata) {
  auto get = [&](const char* name) {
    auto it = metadata.find(name);
    return it == metadata.end() ? std::string() : it->second;
  };
  return {get("data_sha256"), get("code_version")};
}

absl::Status CheckTokenizerKey(const std::string& what, const std::string& path,
                               const TokenizerKey& saved, const TokenizerKey& expected,
                               const std::string& remedy) {
  auto shown = [](const std::string& v) { return v.empty() ? std::string("(none recorded)") : v; };
  std::string why;
  if (!expected.code_version.empty() && saved.code_version != expected.code_version) {
    why = absl::StrCat("it was trained by code version ", shown(saved.code_version),
                       ", this build is ", expected.code_version);
  }
  if (!expected.data_sha256.empty() && saved.data_sha256 != expected.data_sha256) {
    absl::StrAppend(&why, why.empty() ? "" : "; ", "its training data had sha256 ",
                    shown(saved.data_sha256), ", the data now hashes to ", expected.data_sha256);
  }
  if (why.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("the ", what, " ", path, " does not match: ", why, ". ", remedy));
}

}  // namespace modamba::data
