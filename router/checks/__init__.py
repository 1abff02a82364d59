"""Small labelled prompt sets that judge routers where the big outcome files cannot."""
