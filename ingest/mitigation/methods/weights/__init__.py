"""Weight methods: choose MLP weights by the forget set (and, some, the retain set) and zero them."""
