"""The dashboard's pages: each a `Page` over the selected run, built only from `kdviz.views`."""
