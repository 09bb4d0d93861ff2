use std::fmt;
use std::str::FromStr;

/// Every scalar metric lmcompare reports. The JSON key is scikit-learn's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Accuracy,
    BalancedAccuracy,
    PrecisionMicro,
    RecallMicro,
    F1Micro,
    PrecisionMacro,
    RecallMacro,
    F1Macro,
    PrecisionWeighted,
    RecallWeighted,
    F1Weighted,
    /// `average="binary"` with the positive label.
    Precision,
    Recall,
    F1,
    Mcc,
    CohenKappa,
    CohenKappaLinear,
    CohenKappaQuadratic,
    LogLoss,
    Brier,
    Ece,
    /// Binary ROC-AUC of the positive class.
    RocAuc,
    AveragePrecision,
    RocAucOvrMacro,
    RocAucOvrWeighted,
    AveragePrecisionMacro,
    AveragePrecisionWeighted,
}

impl Metric {
    pub const ALL: [Metric; 27] = [
        Metric::Accuracy,
        Metric::BalancedAccuracy,
        Metric::PrecisionMicro,
        Metric::RecallMicro,
        Metric::F1Micro,
        Metric::PrecisionMacro,
        Metric::RecallMacro,
        Metric::F1Macro,
        Metric::PrecisionWeighted,
        Metric::RecallWeighted,
        Metric::F1Weighted,
        Metric::Precision,
        Metric::Recall,
        Metric::F1,
        Metric::Mcc,
        Metric::CohenKappa,
        Metric::CohenKappaLinear,
        Metric::CohenKappaQuadratic,
        Metric::LogLoss,
        Metric::Brier,
        Metric::Ece,
        Metric::RocAuc,
        Metric::AveragePrecision,
        Metric::RocAucOvrMacro,
        Metric::RocAucOvrWeighted,
        Metric::AveragePrecisionMacro,
        Metric::AveragePrecisionWeighted,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::BalancedAccuracy => "balanced_accuracy",
            Metric::PrecisionMicro => "precision_micro",
            Metric::RecallMicro => "recall_micro",
            Metric::F1Micro => "f1_micro",
            Metric::PrecisionMacro => "precision_macro",
            Metric::RecallMacro => "recall_macro",
            Metric::F1Macro => "f1_macro",
            Metric::PrecisionWeighted => "precision_weighted",
            Metric::RecallWeighted => "recall_weighted",
            Metric::F1Weighted => "f1_weighted",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::F1 => "f1",
            Metric::Mcc => "mcc",
            Metric::CohenKappa => "cohen_kappa",
            Metric::CohenKappaLinear => "cohen_kappa_linear",
            Metric::CohenKappaQuadratic => "cohen_kappa_quadratic",
            Metric::LogLoss => "log_loss",
            Metric::Brier => "brier",
            Metric::Ece => "ece",
            Metric::RocAuc => "roc_auc",
            Metric::AveragePrecision => "average_precision",
            Metric::RocAucOvrMacro => "roc_auc_ovr_macro",
            Metric::RocAucOvrWeighted => "roc_auc_ovr_weighted",
            Metric::AveragePrecisionMacro => "average_precision_macro",
            Metric::AveragePrecisionWeighted => "average_precision_weighted",
        }
    }

    /// Losses (log-loss, Brier, ECE) are better when lower.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::LogLoss | Metric::Brier | Metric::Ece)
    }

    pub fn needs_probabilities(self) -> bool {
        matches!(
            self,
            Metric::LogLoss
                | Metric::Brier
                | Metric::Ece
                | Metric::RocAuc
                | Metric::AveragePrecision
                | Metric::RocAucOvrMacro
                | Metric::RocAucOvrWeighted
                | Metric::AveragePrecisionMacro
                | Metric::AveragePrecisionWeighted
        )
    }

    /// Whether the metric is a function of the confusion matrix alone; these resample over
    /// confusion cells instead of over examples.
    pub fn from_confusion(self) -> bool {
        !self.needs_probabilities()
    }

    pub(crate) fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .iter()
            .copied()
            .find(|m| m.key() == s)
            .ok_or_else(|| {
                let keys: Vec<&str> = Metric::ALL.iter().map(|m| m.key()).collect();
                format!("unknown metric {s:?}; known metrics: {}", keys.join(", "))
            })
    }
}
