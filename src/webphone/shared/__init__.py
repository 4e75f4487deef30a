"""One SIP registration shared by many processes of one extension: the group ("shared") layer.

`protocol` holds the wire frames, `actions` the allow-list of actions a dummy may forward,
`coordinator` the pure state machine the hub runs, `views` the member-side rules.
"""
