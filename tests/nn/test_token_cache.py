import open_clip
import pytest
import torch

from mav_train.nn.token_cache import CachedTokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return open_clip.get_tokenizer("ViT-B-32", context_length=16)


def test_cached_tokens_equal_the_tokenizer(tokenizer):
    cache = CachedTokenizer(tokenizer)
    captions = ["a red circle at the top", "", "a blue square", "a red circle at the top", "word " * 40]
    for _ in range(2):
        assert torch.equal(cache(captions), tokenizer(captions))
    assert (cache.misses, cache.hits) == (4, 6)
    assert torch.equal(cache("a blue square"), tokenizer(["a blue square"]))
    assert cache([]).shape == tokenizer([]).shape


def test_least_recently_used_caption_leaves_first(tokenizer):
    cache = CachedTokenizer(tokenizer, capacity=2)
    cache(["one", "two"])
    cache(["one"])  # "two" is now the least recently used
    cache(["three"])
    assert len(cache) == 2
    misses = cache.misses
    cache(["one", "three"])
    assert cache.misses == misses
    cache(["two"])
    assert cache.misses == misses + 1


def test_capacity_zero_caches_nothing_and_attributes_pass_through(tokenizer):
    cache = CachedTokenizer(tokenizer, capacity=0)
    assert torch.equal(cache(["a", "a"]), tokenizer(["a", "a"]))
    assert len(cache) == 0
    assert cache.encode("a red circle") == tokenizer.encode("a red circle")
    assert cache.context_length == 16
    with pytest.raises(ValueError, match="capacity"):
        CachedTokenizer(tokenizer, capacity=-1)
