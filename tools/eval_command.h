// The offline evaluation commands, usable without a coordinator (the
// `modamba` tool dispatches `eval` and `generate` to them):
//
//   eval --checkpoint=DIR [--all] [--out=FILE.json] [--out_dir=DIR]
//        [--dataset_dir=DIR] [--raw=DIR] [--classifier_dir=DIR]
//        [--validation=true] [--images=true] [--speech=true]
//        [--val_sequences=16] [--val_batch=4] [--samples_per_digit=4]
//        [--diffusion_steps=50] [--eta=0] [--temperature=1] [--top_k=0] [--seed=0]
//        [--judges]
//     DIR is a checkpoint (step-NNNNNNNN/) or a run's checkpoint root (its
//     newest checkpoint; every one with --all). Prints the metrics as JSON
//     (an array with --all) to stdout or --out; --out_dir receives the image
//     grid and one WAV per digit. --judges then prints, on stdout, each
//     judge's accuracy on real held-out data next to the model's scores
//     (evaluator/calibration.h).
//
//   generate --checkpoint=DIR --prompt=TEXT --modality=image|speech|text --out=FILE
//        [--dataset_dir=DIR] [--temperature=1] [--top_k=0] [--seed=0]
//        [--diffusion_steps=50] [--eta=0] [--max_tokens=N] [--griffin_lim_iterations=32]
//     image: the prompt is a caption ("a handwritten seven"), FILE a PNG;
//     speech: a transcript ("seven"), FILE a WAV; text: FILE gets the prompt
//     and its continuation.
//
// Flags follow tools/cli/flags.h (--help lists them with their defaults).
// Both end with one "wrote PATH (SIZE): WHAT" line per file written and return
// 0 on success, 1 on an error (printed to stderr), 2 on a usage error.
#ifndef MODAMBA_TOOLS_EVAL_COMMAND_H_
#define MODAMBA_TOOLS_EVAL_COMMAND_H_

namespace modamba::eval {

// argv[0] is "eval".
int RunEvalCommand(int argc, char** argv);
// argv[0] is "generate".
int RunGenerateCommand(int argc, char** argv);

}  // namespace modamba::eval

#endif  // MODAMBA_TOOLS_EVAL_COMMAND_H_
