/// Placeholder: the Raft types arrive with the core issue.
module Skiff.Core.Types
