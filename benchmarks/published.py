"""Published protocol-P test numbers (TIGER, NeurIPS 2023, Table 1): full ranking, leave-one-out,
Amazon 2014 5-core. Keyed by (model, dataset); used by the benchmarks that print results next to them."""

PUBLISHED_P = {
    ("sasrec", "sports-p"): {"recall@5": .0233, "ndcg@5": .0154, "recall@10": .0350, "ndcg@10": .0192},
    ("sasrec", "beauty-p"): {"recall@5": .0387, "ndcg@5": .0249, "recall@10": .0605, "ndcg@10": .0318},
    ("sasrec", "toys-p"): {"recall@5": .0463, "ndcg@5": .0306, "recall@10": .0675, "ndcg@10": .0374},
    ("bert4rec", "sports-p"): {"recall@5": .0115, "ndcg@5": .0075, "recall@10": .0191, "ndcg@10": .0099},
    ("bert4rec", "beauty-p"): {"recall@5": .0203, "ndcg@5": .0124, "recall@10": .0347, "ndcg@10": .0170},
    ("bert4rec", "toys-p"): {"recall@5": .0116, "ndcg@5": .0071, "recall@10": .0203, "ndcg@10": .0099},
    ("tiger", "sports-p"): {"recall@5": .0264, "ndcg@5": .0181, "recall@10": .0400, "ndcg@10": .0225},
    ("tiger", "beauty-p"): {"recall@5": .0454, "ndcg@5": .0321, "recall@10": .0648, "ndcg@10": .0384},
    ("tiger", "toys-p"): {"recall@5": .0521, "ndcg@5": .0371, "recall@10": .0712, "ndcg@10": .0432},
}
