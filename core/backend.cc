#include "core/backend.h"

namespace modamba {

void Backend::AddRmsNormForward(Mat x, Mat add, const Tensor& w, double eps, Mat y,
                                Tensor* rstd) {
  Axpy(1.0, add, x);
  RmsNormForward(x, w, eps, y, rstd);
}

void Backend::LmHeadCrossEntropy(Mat h, Mat w, const Tensor& targets, const Tensor& weight,
                                 Tensor* losses, Mat dh, Mat dw) {
  Tensor logits = Empty(h.dtype, {h.rows, w.rows});
  Gemm(false, true, 1.0, h, w, 0.0, logits.mat());
  CrossEntropy(logits.mat(), targets, weight, losses, logits.mat());  // dlogits in place
  Gemm(false, false, 1.0, logits.mat(), w, 0.0, dh);
  Gemm(true, false, 1.0, logits.mat(), h, 1.0, dw);
}

}  // namespace modamba
