"""JSON files: a missing or broken file is named in the error."""
import pytest

from zsi_jax.jsonio import read_json


def test_read_json(tmp_path):
  good = tmp_path / 'a.json'
  good.write_text('{"x": [1, 2]}')
  assert read_json(str(good)) == {'x': [1, 2]}
  with pytest.raises(FileNotFoundError, match='annotation file not found: .*b.json'):
    read_json(str(tmp_path / 'b.json'), 'annotation file')
  bad = tmp_path / 'c.json'
  bad.write_text('{"x": ')
  with pytest.raises(ValueError, match=r'c.json is not valid JSON: .*line 1'):
    read_json(str(bad))
