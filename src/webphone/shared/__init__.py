"""One SIP registration shared by many processes of one extension: the group ("shared") layer.

Pure cores: `protocol` (wire frames), `schema` (field and snapshot-state checks), `actions` (the
allow-list), `routing` (actions to their one outcome), `coordinator` (the state machine the hub
runs), `views` (the member-side rules).
"""
