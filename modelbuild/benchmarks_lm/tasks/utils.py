"""Scoring of the mb_instruct task (lm-eval calls process_results once per sample)."""

from rouge_score import rouge_scorer

_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def process_results(doc, results):
    """ROUGE-L F1 of this response; BLEU and chrF are corpus-level, so lm-eval's aggregations get the pairs."""
    prediction, reference = results[0].strip(), doc["response"]
    return {"rougeL": _ROUGE.score(reference, prediction)["rougeL"].fmeasure,
            "bleu": (reference, prediction), "chrf": (reference, prediction)}
