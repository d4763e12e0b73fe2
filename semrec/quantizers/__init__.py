"""Quantizers that turn item embeddings into semantic-ID codes, by name (residual: rqkmeans,
rqkmeans_balanced, rqvae, letter; product: pq, opq):

    from semrec.quantizers import QUANTIZERS
    q = QUANTIZERS["rqkmeans"]({"codebook_sizes": [256, 256, 256]}).fit(emb)
    codes = q.encode(emb)                          # (N, 3) int64 raw codes
    codes, last_dist = q.fit_encode(emb)           # the fitted catalogue's codes (balanced ones for
                                                   # rqkmeans_balanced, whose encode is nearest-centroid)
    q.save_pretrained("out/q"); q2 = Quantizer.from_pretrained("out/q")
"""

from semrec.quantizers.base import QUANTIZERS, Quantizer, load_quantizer, register_quantizer
from semrec.quantizers.collisions import collision_stats, resolve_collisions
from semrec.quantizers.letter import Letter, LetterConfig
from semrec.quantizers.pq import OPQ, PQ, OPQConfig, PQConfig
from semrec.quantizers.rqkmeans import RQKMeans, RQKMeansConfig
from semrec.quantizers.rqkmeans_balanced import BalancedRQKMeans, BalancedRQKMeansConfig
from semrec.quantizers.rqvae import RQVAE, RQVAEConfig

__all__ = ["QUANTIZERS", "Quantizer", "load_quantizer", "register_quantizer", "collision_stats",
           "resolve_collisions", "RQKMeans", "RQKMeansConfig", "BalancedRQKMeans", "BalancedRQKMeansConfig",
           "PQ", "PQConfig", "OPQ", "OPQConfig", "RQVAE", "RQVAEConfig", "Letter", "LetterConfig"]
