"""Collaborative-filtering teachers (SASRec, BERT4Rec, GRU4Rec): item logits for a batch of
left-padded histories, the item embedding table, training with early stopping, full-ranking evaluation.

    from semrec.cf import TEACHERS, CFTeacher, evaluate_teacher
    from semrec.training.teacher import TeacherTrainConfig, train_teacher   # training lives in semrec.training
    model = TEACHERS["sasrec"](dataset.num_items, SASRecConfig(max_len=50))
    train_teacher(model, dataset, TrainConfig())
    model.save_pretrained("teacher/")
    teacher = CFTeacher.from_pretrained("teacher/")
    logits = teacher.item_logits(torch.from_numpy(dataset.test.padded_histories(50)))  # (B, N)
"""

from semrec.cf.base import (TEACHERS, CFTeacher, build_teacher, cf_item_embeddings, get_teacher_class,
                            register_teacher)
from semrec.cf.bert4rec import BERT4Rec, BERT4RecConfig
from semrec.cf.evaluate import evaluate_teacher, target_in_history, target_in_history_rate, teacher_ranks
from semrec.cf.gru4rec import GRU4Rec, GRU4RecConfig
from semrec.cf.sasrec import SASRec, SASRecConfig

__all__ = [
    "TEACHERS", "CFTeacher", "build_teacher", "cf_item_embeddings", "get_teacher_class", "register_teacher",
    "SASRec", "SASRecConfig", "BERT4Rec", "BERT4RecConfig", "GRU4Rec", "GRU4RecConfig",
    "evaluate_teacher", "teacher_ranks", "target_in_history", "target_in_history_rate",
]
