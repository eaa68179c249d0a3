"""`socktools demo`: the guided tour (:mod:`.tour`)."""
