"""Tiny transformers models saved as plain folders, for serving tests that need no training."""

from __future__ import annotations

from pathlib import Path

WORDS = ["<pad>", "<eos>", "<unk>", "[CLS]", "[SEP]", "good", "bad", "great", "awful", "movie", "the", "was",
         "a", "very", "!", ".", "hello", "world", "once", "upon", "time", "there"]


def _tokenizer(folder: Path, **special):
    import transformers
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w ]"), behavior="isolated")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                         **special).save_pretrained(folder)


def save_text_classifier(folder: Path) -> None:
    import torch
    import transformers

    _tokenizer(folder, cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                                     num_labels=2, id2label={0: "negative", 1: "positive"},
                                     label2id={"negative": 0, "positive": 1}, pad_token_id=0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)


def save_causal_lm(folder: Path) -> None:
    import torch
    import transformers

    _tokenizer(folder, eos_token="<eos>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
