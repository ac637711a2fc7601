//! Rows of the policy service's tables.

pub mod policies {
    use sea_orm::entity::prelude::*;

    /// One policy. List fields and the action map are JSON text, portable across backends.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "policies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub scope: String,
        pub realms: String,
        pub users: String,
        pub clients: String,
        pub actions: String,
        pub priority: i64,
        pub active: bool,
        pub description: String,
        pub etag: String,
        pub create_time: DateTimeUtc,
        pub update_time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod policy_history {
    use sea_orm::entity::prelude::*;

    /// One change of one policy, with the policy before and after as JSON.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "policy_history")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub policy_name: String,
        pub change: String,
        pub actor: String,
        pub change_time: DateTimeUtc,
        pub before_json: Option<String>,
        pub after_json: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
