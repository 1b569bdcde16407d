"""Runs the ORIGINAL Video-LLaMA (a DAMO-NLP-SG/Video-LLaMA checkout) on the tiny files that
`eald-verify-port` wrote, and saves every stage's output. It is started by that command with the
interpreter of the original's environment (transformers 4.28), so it imports nothing from eald:
only the standard library, torch, and the checkout given by --repo.

The original code runs unmodified. What it needs from outside is supplied, and nothing else:
- sizes: `create_eva_vit_g`, `BertConfig.from_pretrained("bert-base-uncased")` and
  `imagebind_huge()` build the released sizes; they are replaced by the same constructors at the
  tiny sizes of the files (EVA's weights still load through the original's own
  `interpolate_pos_embed` + `load_state_dict(strict=False)`);
- no network: BLIP-2's BERT tokenizer (used only for training text) is not built;
- media: the demo's loaders (`load_video` with decord, ImageBind's `load_and_transform_audio_data`
  with torchaudio) are replaced by feeders that hand over the prepared tensors both sides share,
  so `Chat.upload_video`, `Chat.ask`, `get_context_emb` and `Chat.answer` run as released;
- precision: the LLM loads in fp32 (the original hard-codes bf16), so differences are the code's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from functools import partial
from pathlib import Path

import torch
from torch import nn


def _package(name: str, path: Path) -> None:
    """Register a package without running its __init__ (which imports training-only deps)."""
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]
    sys.modules[name] = mod


def _module(name: str, **attrs: object) -> None:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod


class _Identity:
    """Stands in for the demo's video processor: the frames arrive already normalised."""

    def transform(self, x):
        return x

    def __call__(self, x):
        return x


def install_feeders(video: torch.Tensor, audio: torch.Tensor) -> None:
    def load_video(video_path, n_frms, height, width, sampling="uniform", return_msg=False):
        return (video[0], "") if return_msg else video[0]  # (c, t, h, w), as decord's loader

    def load_and_transform_audio_data(paths, device, clips_per_video=8, **kw):
        return audio

    _module("video_llama.processors", Blip2ImageEvalProcessor=_Identity,
            AlproVideoEvalProcessor=_Identity)  # fmt: skip
    _module("video_llama.processors.video_processor", load_video=load_video, ToTHWC=_Identity,
            ToUint8=_Identity)  # fmt: skip
    _module("video_llama.models.ImageBind.data",
            load_and_transform_audio_data=load_and_transform_audio_data)  # fmt: skip


def install_sizes(sizes: dict, eva_path: str, report: dict) -> None:
    """Replace the three size-fixed builders by the original constructors at tiny sizes."""
    import transformers
    from video_llama.models import blip2, eva_vit
    from video_llama.models.ImageBind.models import imagebind_model

    v, q, ib = sizes["vision"], sizes["qformer"], sizes["imagebind"]

    def create_eva_vit_g(img_size=224, drop_path_rate=0.4, use_checkpoint=False, precision="fp16"):
        model = eva_vit.VisionTransformer(
            img_size=img_size, patch_size=14, use_mean_pooling=False, embed_dim=v["width"],
            depth=v["layers"], num_heads=v["heads"], mlp_ratio=v["mlp_ratio"], qkv_bias=True,
            drop_path_rate=drop_path_rate, norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_checkpoint=use_checkpoint,
        )  # fmt: skip
        state_dict = torch.load(eva_path, map_location="cpu")  # the released code: a URL
        eva_vit.interpolate_pos_embed(model, state_dict)
        keys = model.load_state_dict(state_dict, strict=False)
        report["eva_vit_g.pth"] = {"missing": keys.missing_keys, "unexpected": keys.unexpected_keys}
        if precision == "fp16":
            eva_vit.convert_weights_to_fp16(model)
        return model

    def bert_config(*args, **kwargs):
        return transformers.BertConfig(hidden_size=q["width"], num_attention_heads=q["heads"],
                                       intermediate_size=q["intermediate"],
                                       num_hidden_layers=q["layers"])  # fmt: skip

    def imagebind_huge(pretrained=False):
        model = imagebind_model.ImageBindModel(
            vision_embed_dim=ib["vision_width"], vision_num_blocks=ib["vision_layers"],
            vision_num_heads=ib["vision_heads"], text_embed_dim=16, text_num_blocks=1,
            text_num_heads=2, out_embed_dim=ib["embed_dim"], audio_embed_dim=ib["audio_width"],
            audio_num_blocks=ib["audio_layers"], audio_num_heads=ib["audio_heads"],
            audio_drop_path=0.1, depth_embed_dim=16, depth_num_blocks=1, depth_num_heads=2,
            thermal_embed_dim=16, thermal_num_blocks=1, thermal_num_heads=2, imu_embed_dim=16,
            imu_num_blocks=1, imu_num_heads=2, imu_drop_path=0.7,
        )  # fmt: skip
        return model, ib["embed_dim"]

    blip2.create_eva_vit_g = create_eva_vit_g
    transformers.BertConfig.from_pretrained = classmethod(lambda cls, *a, **k: bert_config())
    blip2.Blip2Base.init_tokenizer = classmethod(lambda cls: None)
    imagebind_model.imagebind_huge = imagebind_huge


def complete_imagebind(path: Path, sizes: dict, report: dict) -> None:
    """The original loads imagebind_huge.pth strictly, so it must hold every modality. eald's
    tiny file holds what eald loads (audio); the unused modalities are added from the
    original's own initialisation. An absent *audio* tensor is an error, not filled."""
    from video_llama.models.ImageBind.models import imagebind_model

    model, _ = imagebind_model.imagebind_huge()
    want = model.state_dict()
    have = torch.load(path, map_location="cpu")
    unexpected = sorted(set(have) - set(want))
    missing = sorted(set(want) - set(have))
    audio = [k for k in missing if ".audio." in k]
    if unexpected or audio:
        raise SystemExit(f"{path}: unexpected {unexpected[:5]}; missing audio keys {audio[:5]}")
    report["imagebind_huge.pth"] = {"added_unused_modalities": len(missing)}
    if missing:
        have.update({k: want[k] for k in missing})
        tmp = path.with_name(path.name + ".tmp")
        torch.save(have, tmp)
        os.replace(tmp, path)


def run(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args.spec).read_text())
    files, sizes = spec["files"], spec["sizes"]
    inputs = torch.load(spec["inputs"], map_location="cpu")
    repo = Path(args.repo).resolve()
    sys.path.insert(0, str(repo))
    _package("video_llama", repo / "video_llama")
    _package("video_llama.models", repo / "video_llama" / "models")
    from video_llama.models.base_model import BaseModel  # registry.register_model asks for it

    sys.modules["video_llama.models"].BaseModel = BaseModel
    install_feeders(inputs["video"], inputs["audio"])
    report: dict = {}
    install_sizes(sizes, files["eva_vit"], report)
    complete_imagebind(Path(files["imagebind"]), sizes, report)

    import transformers
    from video_llama.conversation import conversation_video as cv
    from video_llama.models import video_llama as vlm

    load = vlm.LlamaForCausalLM.from_pretrained.__func__

    def fp32(cls, *a, **k):
        k["torch_dtype"] = torch.float32
        return load(cls, *a, **k)

    vlm.LlamaForCausalLM.from_pretrained = classmethod(fp32)
    cfg = {
        "arch": "video_llama", "vit_model": "eva_clip_g", "q_former_model": files["qformer"],
        "image_size": 224, "num_query_token": 32, "llama_model": files["llama"],
        "vit_precision": "fp32", "max_frame_pos": 32, "num_video_query_token": 32,
        "num_audio_query_token": 8, "equip_audio_branch": True,
        "imagebind_ckpt_path": str(Path(files["imagebind"]).parent),
        "ckpt": files["vl"], "ckpt_2": files["al"], "low_resource": False,
    }  # fmt: skip
    model = vlm.VideoLLAMA.from_config(cfg).eval()

    out: dict = {"versions": {"transformers": transformers.__version__, "torch": torch.__version__},
                 "report": report}  # fmt: skip
    video, audio = inputs["video"], inputs["audio"]
    with torch.no_grad():
        x = video.transpose(1, 2).flatten(0, 1)  # 'b c t h w -> (b t) c h w'
        out["eva"] = model.ln_vision(model.visual_encoder(x))
        out["qformer"] = model.Qformer.bert(query_embeds=model.query_tokens.expand(len(x), -1, -1),
                                            encoder_hidden_states=out["eva"],
                                            return_dict=True).last_hidden_state  # fmt: skip
        out["video_tokens"] = model.encode_videoQformer_visual(video)[0]
        _, final = model.audio_encoder.get_audio_feature(audio, modality_type="audio")
        out["imagebind_audio"] = final
        out["audio_tokens"] = model.encode_audioQformer(audio)[0]

        template = {"llama2": cv.conv_llava_llama_2, "vicuna": cv.default_conversation}
        conv, img_list = template[spec["template"]].copy(), []
        chat = cv.Chat(model, _Identity(), device="cpu")
        chat.upload_video("eald-inputs.mp4", conv, img_list)  # the feeders hand over the tensors
        chat.ask(spec["question"], conv)
        conv.append_message(conv.roles[1], None)  # what answer() appends before embedding
        out["prompt"] = conv.get_prompt()
        segs = out["prompt"].split("<ImageHere>")
        out["segment_ids"] = [model.llama_tokenizer(s, add_special_tokens=i == 0).input_ids
                              for i, s in enumerate(segs)]  # fmt: skip
        embs = chat.get_context_emb(conv, img_list)
        conv.messages.pop()
        out["context"] = embs
        out["logits"] = model.llama_model(inputs_embeds=embs).logits[:, -1]
        stop = [torch.tensor([2])] if spec["template"] == "llama2" else [
            torch.tensor([835]), torch.tensor([2277, 29937])]  # fmt: skip
        greedy = model.llama_model.generate(
            inputs_embeds=embs, max_new_tokens=spec["max_new_tokens"], do_sample=False,
            num_beams=1, min_length=1,
            stopping_criteria=transformers.StoppingCriteriaList([cv.StoppingCriteriaSub(stop)]),
        )  # fmt: skip
        out["greedy_ids"] = greedy[0].tolist()
        # Chat.answer as released: it samples (do_sample=True is hard-coded), seeded here.
        torch.manual_seed(spec["sample_seed"])
        text, tokens = chat.answer(conv, img_list, max_new_tokens=spec["max_new_tokens"])
        out["sampled_answer"], out["sampled_ids"] = text, [int(t) for t in tokens]
        out["decoded"] = [model.llama_tokenizer.decode(c) for c in spec["decode"]]
    tmp = Path(args.out).with_suffix(".tmp")
    torch.save(out, tmp)
    os.replace(tmp, args.out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", required=True, help="a DAMO-NLP-SG/Video-LLaMA checkout")
    p.add_argument("--spec", required=True, help="spec.json written by eald-verify-port")
    p.add_argument("--out", required=True, help="where to save the stage outputs (torch.save)")
    run(p.parse_args())


if __name__ == "__main__":
    main()
