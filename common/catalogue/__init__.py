"""The product catalogue: its Kafka records (``products``), the table the runtime feeds from its topic
(``index.Catalogue``: products by id, a vector index per category), the sentence embedder and vector index
behind it (``embedder``, ``vectors``) and the ``deskgen products`` CLI (``cli``).

Importing this package is light (no torch): the records and the vocabulary. The table, the embedder and the
CLI are imported from their modules.
"""

from .products import (DLQ_REASONS, PRODUCT_REASONS, Category, categories, decode_product, product_record, publish,
                        tombstone_record)

__all__ = ["Category", "categories", "product_record", "tombstone_record", "publish", "decode_product",
           "PRODUCT_REASONS", "DLQ_REASONS"]
