//! The error every service returns: a Matrix error code and a message for the client. The API
//! layer turns it into the status and body the spec prescribes.

use feldpost_storage::StorageError;

/// Matrix error codes the services produce (`M_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Forbidden,
    UnknownToken {
        soft_logout: bool,
    },
    MissingToken,
    BadJson,
    NotJson,
    NotFound,
    LimitExceeded {
        retry_after_ms: u64,
    },
    Unrecognized,
    Unknown,
    UserInUse,
    InvalidUsername,
    RoomInUse,
    InvalidRoomState,
    MissingParam,
    InvalidParam,
    TooLarge,
    Exclusive,
    UserDeactivated,
    UnsupportedRoomVersion,
    IncompatibleRoomVersion,
    BadState,
    GuestAccessForbidden,
    WeakPassword,
    Unauthorized,
    NotYetUploaded,
    CannotOverwriteMedia,
    BadAlias,
    /// A signature that does not verify (cross-signing uploads).
    InvalidSignature,
    CannotLeaveServerNoticeRoom,
    /// `M_UNKNOWN` with the status of a server fault: something on our side failed.
    Internal,
}

impl ErrorKind {
    pub fn errcode(self) -> &'static str {
        use ErrorKind::*;
        match self {
            Forbidden => "M_FORBIDDEN",
            UnknownToken { .. } => "M_UNKNOWN_TOKEN",
            MissingToken => "M_MISSING_TOKEN",
            BadJson => "M_BAD_JSON",
            NotJson => "M_NOT_JSON",
            NotFound => "M_NOT_FOUND",
            LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            Unrecognized => "M_UNRECOGNIZED",
            Unknown | Internal => "M_UNKNOWN",
            UserInUse => "M_USER_IN_USE",
            InvalidUsername => "M_INVALID_USERNAME",
            RoomInUse => "M_ROOM_IN_USE",
            InvalidRoomState => "M_INVALID_ROOM_STATE",
            MissingParam => "M_MISSING_PARAM",
            InvalidParam => "M_INVALID_PARAM",
            TooLarge => "M_TOO_LARGE",
            Exclusive => "M_EXCLUSIVE",
            UserDeactivated => "M_USER_DEACTIVATED",
            UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            IncompatibleRoomVersion => "M_INCOMPATIBLE_ROOM_VERSION",
            BadState => "M_BAD_STATE",
            GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            WeakPassword => "M_WEAK_PASSWORD",
            Unauthorized => "M_UNAUTHORIZED",
            NotYetUploaded => "M_NOT_YET_UPLOADED",
            CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            BadAlias => "M_BAD_ALIAS",
            InvalidSignature => "M_INVALID_SIGNATURE",
            CannotLeaveServerNoticeRoom => "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
        }
    }

    /// The HTTP status the spec gives this error.
    pub fn status(self) -> u16 {
        use ErrorKind::*;
        match self {
            Forbidden | UserDeactivated | GuestAccessForbidden | CannotLeaveServerNoticeRoom => 403,
            UnknownToken { .. } | MissingToken | Unauthorized => 401,
            NotFound => 404,
            LimitExceeded { .. } => 429,
            Unrecognized => 404,
            TooLarge => 413,
            NotYetUploaded => 504,
            CannotOverwriteMedia => 409,
            Internal => 500,
            _ => 400,
        }
    }
}

/// A failed operation: what to tell the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", kind.errcode())]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn bad_json(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadJson, m)
    }
    pub fn invalid_param(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, m)
    }
    pub fn missing_param(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingParam, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, m)
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(m) => Error::not_found(m),
            StorageError::Conflict(m) => Error::new(ErrorKind::Unknown, m),
            other => {
                tracing::error!(error = %other, "storage failure");
                Error::internal("internal storage error")
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
