"""The word helpers of chat.abstention are public: curation.faq uses them to find names a
question has and an FAQ entry does not know."""

import chat.abstention as abstention
import curation.faq as faq


def test_stem_and_content_words_are_public():
    assert abstention.stem("indexes") == "index"
    assert abstention.stem("installing") == "install"
    assert abstention.content_words("How are the documents indexed?") == {"document", "index"}


def test_curation_uses_the_public_names_only():
    assert not hasattr(abstention, "_stem")
    assert not hasattr(abstention, "_content_words")
    assert faq.stem is abstention.stem
    assert faq.content_words is abstention.content_words
    assert faq.unmentioned_names("import from OneNote", "Import notes from Evernote.") == [
        "onenote"
    ]
