"""A reward plug-in for tests that need a gradient from an untrained policy. The random tiny policy earns none of
the built-in rewards and nearly always runs to the length limit, so this scores something arbitrary that every
sample has to a different degree: the share of odd token ids. A group's samples get different rewards, and a
step moves the weights."""


def odd_ids(prompts, completions, completion_ids=None, **kwargs):
    return [sum(i % 2 for i in ids) / max(len(ids), 1) for ids in completion_ids]
