#include "core/data/image_io.h"

// jpeglib.h needs size_t and FILE declared first.
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstring>

#include <jpeglib.h>
#include <png.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/file_util.h"
#include "core/status_macros.h"

namespace modamba::data {
namespace {

constexpr unsigned char kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
constexpr unsigned char kJpegSignature[3] = {0xff, 0xd8, 0xff};

bool StartsWith(absl::string_view bytes, const unsigned char* signature, size_t n) {
  return bytes.size() >= n && std::memcmp(bytes.data(), signature, n) == 0;
}

std::string TooLarge(int64_t width, int64_t height) {
  return absl::StrCat(width, "x", height, " pixels, more than the ", kMaxImagePixels,
                      " read at most");
}

// libpng and libjpeg report errors by longjmp, which skips C++ destructors:
// everything the decoders own lives outside the jumping frames, in these
// states, and the message travels in `error`.

struct PngState {
  absl::string_view bytes;
  size_t position = 0;
  std::string error;
  jmp_buf jump;
};

void PngRead(png_structp png, png_bytep out, png_size_t length) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (state->bytes.size() - state->position < length) png_error(png, "file ends early");
  std::memcpy(out, state->bytes.data() + state->position, length);
  state->position += length;
}

void PngError(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  state->error = absl::StrCat("corrupt or truncated PNG: ", message);
  std::longjmp(state->jump, 1);
}

// Warnings (an unusual colour profile, a bad ancillary chunk) leave the
// pixels intact.
void PngWarning(png_structp, png_const_charp) {}

// Decodes into *image, whose pixels are sized here; false with state->error set
// on failure. Only plain data lives in this frame.
bool DecodePng(PngState* state, Image* image, std::vector<png_bytep>* rows) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, state, PngError, PngWarning);
  if (png == nullptr) {
    state->error = "cannot create a PNG reader";
    return false;
  }
  png_infop info = png_create_info_struct(png);
  if (setjmp(state->jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  if (info == nullptr) png_error(png, "cannot create PNG info");
  png_set_read_fn(png, state, PngRead);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  if (int64_t{width} * height > kMaxImagePixels) {
    state->error = TooLarge(width, height);
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  // Everything to 8-bit grey, grey + alpha, RGB or RGBA.
  png_set_expand(png);  // palette -> RGB, grey < 8 bits -> 8 bits, tRNS -> alpha
  png_set_scale_16(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  image->height = static_cast<int>(height);
  image->width = static_cast<int>(width);
  image->channels = png_get_channels(png, info);
  image->pixels.resize(static_cast<size_t>(height) * width * image->channels);
  rows->resize(height);
  for (png_uint_32 y = 0; y < height; ++y) {
    (*rows)[y] = image->pixels.data() + static_cast<size_t>(y) * width * image->channels;
  }
  png_read_image(png, rows->data());
  png_read_end(png, nullptr);  // the chunks after the pixels, up to IEND
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

struct JpegState {
  jpeg_error_mgr manager;  // first, so that cinfo->err points at the state
  std::string error;
  jmp_buf jump;
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* state = reinterpret_cast<JpegState*>(cinfo->err);
  char message[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, message);
  state->error = absl::StrCat("corrupt or truncated JPEG: ", message);
  std::longjmp(state->jump, 1);
}

// Level -1 is a corrupt-data warning (a premature end, a damaged entropy
// segment): libjpeg would fill in grey and carry on; such a file is refused.
void JpegMessage(j_common_ptr cinfo, int level) {
  if (level < 0) JpegErrorExit(cinfo);
}

bool DecodeJpeg(absl::string_view bytes, JpegState* state, Image* image) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&state->manager);
  state->manager.error_exit = JpegErrorExit;
  state->manager.emit_message = JpegMessage;
  if (setjmp(state->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    state->error = "CMYK JPEG is not supported (convert it to RGB)";
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  if (int64_t{cinfo.image_width} * cinfo.image_height > kMaxImagePixels) {
    state->error = TooLarge(cinfo.image_width, cinfo.image_height);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  image->height = static_cast<int>(cinfo.output_height);
  image->width = static_cast<int>(cinfo.output_width);
  image->channels = cinfo.output_components;
  const size_t stride = static_cast<size_t>(image->width) * image->channels;
  image->pixels.resize(stride * image->height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = image->pixels.data() + cinfo.output_scanline * stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);  // reads up to the end-of-image marker
  jpeg_destroy_decompress(&cinfo);
  return true;
}

}  // namespace

absl::StatusOr<Image> ReadImage(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  Image image;
  if (StartsWith(bytes, kPngSignature, sizeof(kPngSignature))) {
    PngState state;
    state.bytes = bytes;
    std::vector<png_bytep> rows;
    if (!DecodePng(&state, &image, &rows)) {
      return absl::DataLossError(absl::StrCat(path, ": ", state.error));
    }
  } else if (StartsWith(bytes, kJpegSignature, sizeof(kJpegSignature))) {
    JpegState state;
    if (!DecodeJpeg(bytes, &state, &image)) {
      return absl::DataLossError(absl::StrCat(path, ": ", state.error));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a PNG or JPEG file (by its first bytes)"));
  }
  return image;
}

}  // namespace modamba::data
