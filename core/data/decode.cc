#include "core/data/decode.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/data/audio.h"
#include "core/data/png_io.h"
#include "core/data/spans.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba::data {
namespace {

void AppendByte(unsigned char c, std::string* out) {
  if (c == '\n') {
    out->append("\\n");
  } else if (c >= 0x20 && c < 0x7f) {
    out->push_back(static_cast<char>(c));
  } else {
    absl::StrAppendFormat(out, "\\x%02x", c);
  }
}

// A text token: a special, or the bytes its text tokenizer id stands for
// (bytes themselves without a tokenizer.json).
void AppendText(int32_t token, const Vocab& vocab, const TextTokenizer* text, std::string* out) {
  if (const char* special = SpecialName(token)) {
    absl::StrAppend(out, "<", special, ">");
    return;
  }
  const int32_t id = vocab.TextId(token);
  if (text == nullptr || id < 0) {
    AppendByte(static_cast<unsigned char>(token), out);
    return;
  }
  for (unsigned char c : text->Decode({id})) AppendByte(c, out);
}

}  // namespace

absl::StatusOr<SequenceDecoder> SequenceDecoder::Open(const std::string& dataset_dir) {
  SequenceDecoder decoder;
  ASSIGN_OR_RETURN(decoder.manifest_, ReadDatasetManifest(dataset_dir));
  for (const auto& [name, entry] : decoder.manifest_.tokenizers) {
    const std::string path = absl::StrCat(dataset_dir, "/", entry.file);
    ASSIGN_OR_RETURN(std::string sha, Sha256File(path));
    if (sha != entry.sha256) {
      return absl::DataLossError(absl::StrCat(path, ": SHA-256 differs from the manifest"));
    }
    if (name == "text") {
      ASSIGN_OR_RETURN(decoder.text_, LoadTextTokenizer(path));
    } else if (name == "image_vq") {
      ASSIGN_OR_RETURN(decoder.vq_, ImageVq::Load(path));
    } else if (name == "speech_units") {
      ASSIGN_OR_RETURN(decoder.speech_, SpeechUnits::Load(path));
    }
  }
  return decoder;
}

absl::StatusOr<std::string> SequenceDecoder::Decode(const PackedBatch& batch, int row,
                                                    const std::string& out_dir,
                                                    const std::string& prefix,
                                                    int griffin_lim_iterations) const {
  const Vocab& vocab = manifest_.vocab;
  const size_t base = static_cast<size_t>(row) * batch.seq_len;
  std::string out;
  const std::vector<DocumentSpans> docs = FindDocuments(batch, row);
  for (size_t d = 0; d < docs.size(); ++d) {
    const DocumentSpans& doc = docs[d];
    if (doc.padding) {
      absl::StrAppend(&out, absl::StrFormat("[%4d..%4d) <PAD> x %d\n", doc.begin, doc.end,
                                            doc.end - doc.begin));
      continue;
    }
    int targets = 0;
    for (int t = doc.begin; t < doc.end; ++t) targets += batch.loss_mask[base + t];
    absl::StrAppend(&out, absl::StrFormat("[%4d..%4d) doc %d, %d targets: ", doc.begin, doc.end,
                                          d, targets));
    size_t next_span = 0;
    int images = 0, speech = 0;
    for (int t = doc.begin; t < doc.end; ++t) {
      if (next_span < doc.spans.size() && t == doc.spans[next_span].begin) {
        const Span& span = doc.spans[next_span++];
        const int n = span.end - span.begin;
        const std::string stem = absl::StrCat(out_dir, "/", prefix, "_doc", d);
        if (span.kind == Span::kImage) {
          const std::string file = absl::StrCat(stem, "_image", images++, ".png");
          // The codebook knows its images' shape; continuous patches are the
          // digits' 28x28 grey.
          const ImageShape shape = vq_ ? vq_->shape() : ImageShape();
          std::vector<uint8_t> pixels(shape.pixels());
          bool decodable = n == shape.patches();
          if (decodable && manifest_.patch_dim == shape.patch_dim()) {
            ImageFromContinuousPatches(
                batch.patches.data() + span.first_patch * shape.patch_dim(), pixels.data(), shape);
          } else if (decodable && vq_) {
            std::vector<int32_t> codes(batch.tokens.begin() + base + span.begin,
                                       batch.tokens.begin() + base + span.end);
            for (int32_t& c : codes) c -= vocab.image_begin();
            RETURN_IF_ERROR(vq_->Decode(codes.data(), pixels.data()));
          } else {
            decodable = false;
          }
          absl::StrAppend(&out, "<image: ", n, manifest_.patch_dim > 0 ? " patches" : " codes");
          if (decodable && !out_dir.empty()) {
            RETURN_IF_ERROR(
                WritePng(file, shape.width, shape.height, shape.channels, pixels.data()));
            absl::StrAppend(&out, " -> ", file);
          }
          out.append(">");
        } else {
          std::vector<int32_t> units(batch.tokens.begin() + base + span.begin,
                                     batch.tokens.begin() + base + span.end);
          for (int32_t& u : units) u -= vocab.speech_begin();
          absl::StrAppend(&out, "<speech: ", n, " units");
          if (speech_) {
            ASSIGN_OR_RETURN(std::vector<float> mel, speech_->Decode(units));
            const MelConfig& config = speech_->mel_config();
            const int frames = static_cast<int>(mel.size() / config.n_mels);
            absl::StrAppend(&out, absl::StrFormat(", %.2f s", frames * config.hop /
                                                                   static_cast<double>(config.sample_rate)));
            if (!out_dir.empty() && frames > 0) {
              const std::string wav = absl::StrCat(stem, "_speech", speech, ".wav");
              const std::string png = absl::StrCat(stem, "_speech", speech, "_mel.png");
              Audio audio;
              audio.sample_rate = config.sample_rate;
              audio.samples = MelAnalyzer(config).GriffinLim(mel.data(), frames,
                                                             griffin_lim_iterations, 0);
              RETURN_IF_ERROR(WriteWavFile(wav, audio));
              RETURN_IF_ERROR(WriteMelPng(png, mel, config.n_mels));
              absl::StrAppend(&out, " -> ", wav, ", ", png);
            }
          }
          ++speech;
          out.append(">");
        }
        t = span.end - 1;
        continue;
      }
      AppendText(batch.tokens[base + t], vocab, text_.get(), &out);
    }
    out.append("\n");
  }
  return out;
}

}  // namespace modamba::data
