//! L2TPv3 control connections and sessions (RFC 3931), both roles.
