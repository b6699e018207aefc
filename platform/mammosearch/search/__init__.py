"""A query -> its nearest archive images or cases: the request, filters, vote and results."""
