//! The providers prq has drivers for, by the name a lane's config gives: the one list
//! the supervisor (config checks, `prq login`) and the worker (its drivers) both read.

/// A chat site prq can drive, or one of its own stand-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// No browser: answers from [`crate::script`] (for measuring prq itself).
    Echo,
    /// prq's own sandbox chat site, in Chromium.
    Sandbox,
    DeepSeek,
    Glm,
    Moonshot,
    Qwen,
    Perplexity,
    HuggingChat,
    AiStudio,
}

impl Provider {
    pub const ALL: [Provider; 9] = [
        Provider::Sandbox,
        Provider::Echo,
        Provider::DeepSeek,
        Provider::Glm,
        Provider::Moonshot,
        Provider::Qwen,
        Provider::Perplexity,
        Provider::HuggingChat,
        Provider::AiStudio,
    ];

    /// Its name in the config (`provider = "..."`) and in model-ID prefixes' defaults.
    pub const fn name(self) -> &'static str {
        match self {
            Provider::Echo => "echo",
            Provider::Sandbox => "sandbox",
            Provider::DeepSeek => "deepseek",
            Provider::Glm => "glm",
            Provider::Moonshot => "moonshot",
            Provider::Qwen => "qwen",
            Provider::Perplexity => "perplexity",
            Provider::HuggingChat => "huggingchat",
            Provider::AiStudio => "aistudio",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Every provider's name, for messages: "sandbox, echo, deepseek, ...".
    pub fn names() -> String {
        Self::ALL.map(Provider::name).join(", ")
    }

    /// Whether its lanes run a browser (every provider but echo).
    pub const fn has_browser(self) -> bool {
        !matches!(self, Provider::Echo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_reads_back_as_its_provider() {
        for p in Provider::ALL {
            assert_eq!(Provider::from_name(p.name()), Some(p));
        }
        assert_eq!(Provider::from_name("DeepSeek"), None);
        assert!(Provider::names().starts_with("sandbox, echo, deepseek"));
    }
}
