// Incremental SHA-256, for bytes that arrive in pieces (uploads, downloads).
#ifndef MODAMBA_CORE_SHA256_H_
#define MODAMBA_CORE_SHA256_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"

typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace modamba {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  void Update(absl::string_view bytes);
  // Lowercase hex of everything passed to Update; call once.
  std::string HexDigest();

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace modamba

#endif  // MODAMBA_CORE_SHA256_H_
