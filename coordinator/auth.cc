#include "coordinator/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba {
namespace {

constexpr char kUnauthenticated[] =
    "missing or wrong bearer token (metadata \"authorization: Bearer ...\")";

bool SameDigest(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

const char* RoleName(v1::WorkerRole role) {
  return role == v1::ROLE_TRAINER ? "trainer" : role == v1::ROLE_EVALUATOR ? "evaluator" : "none";
}

std::string Mac(const std::string& secret, const std::string& message) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &length);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(mac), length));
}

std::string WorkerName(const v1::WorkerRef& ref) {
  return absl::StrCat(RoleName(ref.role()), "-", ref.rank(), " of ", ref.job_id());
}

}  // namespace

TokenAuth::TokenAuth(const std::map<std::string, std::string>& users, std::string worker_secret)
    : worker_secret_(std::move(worker_secret)) {
  for (const auto& [name, token] : users) user_digests_.emplace_back(name, Sha256Hex(token));
}

std::string TokenAuth::WorkerToken(const v1::WorkerRef& ref) const {
  const std::string identity = absl::StrCat("worker.", ref.job_id(), ".", RoleName(ref.role()), ".",
                                            ref.rank());
  return absl::StrCat(identity, ".", Mac(worker_secret_, identity));
}

absl::StatusOr<Caller> TokenAuth::Identify(absl::string_view presented) const {
  const std::string digest = Sha256Hex(presented);
  Caller caller;
  for (const auto& [name, user_digest] : user_digests_) {
    if (SameDigest(digest, user_digest)) caller.user = name;
  }
  if (!caller.user.empty()) return caller;
  // "worker.JOB.ROLE.RANK.MAC": the identity is checked by its MAC.
  std::vector<std::string> parts = absl::StrSplit(presented, '.');
  if (parts.size() == 5 && parts[0] == "worker" && (parts[2] == "trainer" || parts[2] == "evaluator")) {
    v1::WorkerRef& ref = caller.worker;
    ref.set_job_id(parts[1]);
    ref.set_role(parts[2] == "trainer" ? v1::ROLE_TRAINER : v1::ROLE_EVALUATOR);
    int rank = -1;
    if (absl::SimpleAtoi(parts[3], &rank)) {
      ref.set_rank(rank);
      if (SameDigest(Sha256Hex(WorkerToken(ref)), digest)) return caller;
    }
  }
  return absl::UnauthenticatedError(kUnauthenticated);
}

absl::StatusOr<Caller> TokenAuth::IdentifyHeader(absl::string_view header) const {
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWithIgnoreCase(header, kBearer)) {
    return absl::UnauthenticatedError(kUnauthenticated);
  }
  return Identify(absl::StripAsciiWhitespace(header.substr(kBearer.size())));
}

grpc::Status TokenAuth::Check(const grpc::ServerContextBase& context, Caller* caller) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, kUnauthenticated);
  absl::StatusOr<Caller> who = IdentifyHeader(absl::string_view(it->second.data(), it->second.size()));
  if (!who.ok()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, kUnauthenticated);
  *caller = std::move(*who);
  return grpc::Status::OK;
}

grpc::Status TokenAuth::CheckUser(const grpc::ServerContextBase& context, std::string* user) const {
  Caller caller;
  if (grpc::Status s = Check(context, &caller); !s.ok()) return s;
  if (caller.is_worker()) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("a worker's token (", WorkerName(caller.worker),
                                     ") may not call the job service"));
  }
  *user = caller.user;
  return grpc::Status::OK;
}

grpc::Status TokenAuth::CheckWorker(const grpc::ServerContextBase& context,
                                    const v1::WorkerRef& ref) const {
  Caller caller;
  if (grpc::Status s = Check(context, &caller); !s.ok()) return s;
  const v1::WorkerRef& me = caller.worker;
  if (!caller.is_worker() || me.job_id() != ref.job_id() || me.role() != ref.role() ||
      me.rank() != ref.rank()) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("this token may not speak for ", WorkerName(ref)));
  }
  return grpc::Status::OK;
}

grpc::Status TokenAuth::CheckJobReader(const grpc::ServerContextBase& context,
                                       const std::string& job_id) const {
  Caller caller;
  if (grpc::Status s = Check(context, &caller); !s.ok()) return s;
  if (caller.is_worker() && caller.worker.job_id() != job_id) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("a worker of ", caller.worker.job_id(), " may not read ",
                                     job_id.substr(0, 64)));
  }
  return grpc::Status::OK;
}

}  // namespace modamba
